#!/usr/bin/env bash
# The whole test suite (`npm test`):
# 1. the bun suites against the source;
# 2. the protocol, chat and recovery suites again, against the compiled binary (built here with
#    `npm run build`'s command into .tmp/bin), which runs from temp directories with no
#    node_modules and no source tree (test/helpers.ts, SINAL_TARGET=binary);
# 3. the same suites against the source on PostgreSQL (SINAL_STORE=postgres; skipped by hand
#    without PostgreSQL, a failure under CI=true);
# 4. the Python client's pytest suite.
# All run; the exit code is non-zero when any fails.
set -u
cd "$(dirname "$0")/.."
bun test --timeout 20000 "$@"
bun_status=$?

binary_status=0
if [ "$#" -eq 0 ]; then
  echo "== the protocol, chat and recovery suites against the compiled binary"
  mkdir -p .tmp/bin
  if bun build src/main.ts --compile --bytecode --format=esm --minify --sourcemap --outfile .tmp/bin/sinal >/dev/null; then
    SINAL_TARGET=binary SINAL_BINARY="$PWD/.tmp/bin/sinal" bun test --timeout 20000 test/frames.test.ts test/chat.test.ts test/recovery.test.ts
    binary_status=$?
  else
    echo "building the binary failed"
    binary_status=1
  fi
fi

postgres_status=0
if [ "$#" -eq 0 ]; then
  # The same suites against the source on PostgreSQL (each server gets a throwaway PostgreSQL from
  # Debian's package: test/support/postgres.ts).
  if ls /usr/lib/postgresql/*/bin/initdb >/dev/null 2>&1 || [ -n "${POSTGRES_BIN_DIR:-}" ]; then
    echo "== the protocol, chat and recovery suites on PostgreSQL"
    SINAL_STORE=postgres bun test --timeout 20000 test/frames.test.ts test/chat.test.ts test/recovery.test.ts
    postgres_status=$?
  elif [ "${CI:-}" = "true" ]; then
    echo "PostgreSQL is required under CI=true (apt-get install postgresql)"
    postgres_status=1
  else
    echo "== skipping the suites on PostgreSQL: no PostgreSQL (apt-get install postgresql)"
  fi
fi

bash clients/python/run-tests.sh
py_status=$?
if [ "$bun_status" -ne 0 ]; then exit "$bun_status"; fi
if [ "$binary_status" -ne 0 ]; then exit "$binary_status"; fi
if [ "$postgres_status" -ne 0 ]; then exit "$postgres_status"; fi
exit "$py_status"
