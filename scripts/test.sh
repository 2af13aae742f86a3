#!/usr/bin/env bash
# The whole test suite (`npm test`):
# 1. the bun suites against the source (sqlite);
# 2. the protocol, chat and recovery suites again, against the compiled binary (built here with
#    `npm run build`'s command into .tmp/bin), which runs from temp directories with no
#    node_modules and no source tree (test/helpers.ts, SINAL_TARGET=binary);
# 3. on PostgreSQL (SINAL_STORE=postgres: every server gets a database of its own in a throwaway
#    PostgreSQL; skipped by hand without PostgreSQL, a failure under CI=true): the same three
#    suites against the compiled binary, then every suite that starts a sinal against the source;
# 4. every server three cluster nodes behind a balancer (Redis and PostgreSQL): the same three
#    suites from source, then from the binary (the three-node bed runs from the binary in 3);
# 5. the Python client's pytest suite.
# All run; the exit code is non-zero when any fails.
set -u
cd "$(dirname "$0")/.."
bun test --timeout 20000 "$@"
bun_status=$?

binary_status=0
built=false
if [ "$#" -eq 0 ]; then
  echo "== the protocol, chat and recovery suites against the compiled binary"
  mkdir -p .tmp/bin
  if bun build src/main.ts --compile --bytecode --format=esm --minify --sourcemap --outfile .tmp/bin/sinal >/dev/null; then
    built=true
    SINAL_TARGET=binary SINAL_BINARY="$PWD/.tmp/bin/sinal" bun test --timeout 20000 test/frames.test.ts test/chat.test.ts test/recovery.test.ts
    binary_status=$?
  else
    echo "building the binary failed"
    binary_status=1
  fi
fi

postgres_status=0
if [ "$#" -eq 0 ]; then
  # Every suite that runs a sinal on the store test/helpers.ts picks (startServer,
  # startChildServer, openServerStore), except the ones that choose their database themselves:
  # cli.test.ts (the CLI on sqlite files) and postgres-server.test.ts (on PostgreSQL already).
  pg_suites=$(grep -lE "startServer|startChildServer|openServerStore" test/*.test.ts | grep -vE "^test/(cli|postgres-server|cluster.*)\.test\.ts$")
  if ls /usr/lib/postgresql/*/bin/initdb >/dev/null 2>&1 || [ -n "${POSTGRES_BIN_DIR:-}" ]; then
    echo "== the protocol, chat and recovery suites against the compiled binary on PostgreSQL"
    if [ "$built" = true ]; then
      # With the three-node bed from the binary (its nodes are child processes of their own).
      SINAL_STORE=postgres SINAL_TARGET=binary SINAL_BINARY="$PWD/.tmp/bin/sinal" bun test --timeout 20000 test/frames.test.ts test/chat.test.ts test/recovery.test.ts test/cluster-bed.test.ts
      postgres_status=$?
    else
      echo "no binary to run (the build failed)"
      postgres_status=1
    fi
    echo "== every suite that starts a sinal, against the source on PostgreSQL"
    # shellcheck disable=SC2086 # one word per file
    SINAL_STORE=postgres bun test --timeout 20000 $pg_suites
    status=$?
    if [ "$postgres_status" -eq 0 ]; then postgres_status=$status; fi
  elif [ "${CI:-}" = "true" ]; then
    echo "PostgreSQL is required under CI=true (apt-get install postgresql)"
    postgres_status=1
  else
    echo "== skipping the suites on PostgreSQL: no PostgreSQL (apt-get install postgresql)"
  fi
fi

cluster_status=0
if [ "$#" -eq 0 ]; then
  # 5. Every server three cluster nodes behind a balancer (SINAL_CLUSTER=redis: one throwaway
  #    redis-server, PostgreSQL; test/helpers.ts): the protocol, chat and recovery suites from
  #    source, then from the compiled binary.
  if command -v redis-server >/dev/null 2>&1 && { ls /usr/lib/postgresql/*/bin/initdb >/dev/null 2>&1 || [ -n "${POSTGRES_BIN_DIR:-}" ]; }; then
    echo "== the protocol, chat and recovery suites on three cluster nodes behind a balancer (Redis and PostgreSQL), from source"
    SINAL_CLUSTER=redis bun test --timeout 20000 test/frames.test.ts test/chat.test.ts test/recovery.test.ts
    cluster_status=$?
    echo "== the same suites on three cluster nodes, from the compiled binary"
    if [ "$built" = true ]; then
      SINAL_CLUSTER=redis SINAL_TARGET=binary SINAL_BINARY="$PWD/.tmp/bin/sinal" bun test --timeout 20000 test/frames.test.ts test/chat.test.ts test/recovery.test.ts
      status=$?
      if [ "$cluster_status" -eq 0 ]; then cluster_status=$status; fi
    else
      echo "no binary to run (the build failed)"
      cluster_status=1
    fi
  elif [ "${CI:-}" = "true" ]; then
    echo "Redis and PostgreSQL are required under CI=true (apt-get install redis-server postgresql)"
    cluster_status=1
  else
    echo "== skipping the suites on cluster nodes: no redis-server or PostgreSQL (apt-get install redis-server postgresql)"
  fi
fi

bash clients/python/run-tests.sh
py_status=$?
if [ "$bun_status" -ne 0 ]; then exit "$bun_status"; fi
if [ "$binary_status" -ne 0 ]; then exit "$binary_status"; fi
if [ "$postgres_status" -ne 0 ]; then exit "$postgres_status"; fi
if [ "$cluster_status" -ne 0 ]; then exit "$cluster_status"; fi
exit "$py_status"
