#!/usr/bin/env bash
# Diagnostic (not part of `npm run bench`): where does a server's idle-connection memory go?
# For each configuration: start the server (core 0) under bench/tools/memory-probe.ts, force a full
# GC and read RSS, open 10,000 idle connections (2 load-generator processes on core 1, each its own
# user with a JWT), wait, force a GC again, and print the RSS delta per 1,000 connections with
# the JS heap figures. Configurations: bare Bun (the benchmark's reference), a minimal Bun server
# with sinal's per-connection pieces added one by one, and sinal itself.
#   bash bench/tools/memory-breakdown.sh            (about 2 minutes)
set -euo pipefail
cd "$(dirname "$0")/../.."
BUN=node_modules/.bin/bun
SECRET=$(head -c 32 /dev/urandom | base64 | tr -d '/+=' | head -c 40)
TMP=$(mktemp -d)
server=""
holders=()
cleanup() {
  for pid in "${holders[@]}" $server; do kill "$pid" 2>/dev/null || true; done
  rm -rf "$TMP"
}
trap cleanup EXIT

probe() { # name, load-generator target, env..., -- mode
  local name=$1 target=$2; shift 2
  local envs=()
  while [[ $1 != -- ]]; do envs+=("$1"); shift; done
  shift
  local port=$((20000 + RANDOM % 12000))
  env "${envs[@]}" PORT=$port JWT_SECRET=$SECRET HOST=127.0.0.1 DATABASE_URL="sqlite:$TMP/$name.db" LOG_LEVEL=warn \
    MAX_CONNECTIONS_PER_USER=100000 MAX_CONNECTIONS_PER_TENANT=100000 \
    taskset -c 0 $BUN bench/tools/memory-probe.ts "$@" >"$TMP/$name.out" 2>"$TMP/$name.err" &
  server=$!
  for _ in $(seq 50); do curl -s -o /dev/null "http://127.0.0.1:$port/" && break; sleep 0.1; done
  sleep 1
  kill -USR2 "$server"; sleep 1
  holders=()
  for i in 0 1; do
    sleep 30 | taskset -c 1 $BUN bench/loadgen.ts idle \
      "{\"target\":\"$target\",\"host\":\"127.0.0.1\",\"port\":$port,\"secret\":\"$SECRET\",\"serverPid\":$server,\"concurrency\":100,\"deadlineSec\":60,\"count\":5000,\"offset\":$((i * 5000))}" \
      >"$TMP/$name.idle$i" 2>&1 &
    holders+=($!)
  done
  for _ in $(seq 100); do [[ $(cat "$TMP/$name.idle0" "$TMP/$name.idle1" | grep -c '"ready"') == 2 ]] && break; sleep 0.2; done
  sleep 5
  kill -USR2 "$server"; sleep 1
  for pid in "${holders[@]}"; do kill "$pid" 2>/dev/null || true; done
  kill "$server"; wait "$server" 2>/dev/null || true; server=""
  python3 - "$name" "$TMP/$name.err" "$TMP/$name.idle0" "$TMP/$name.idle1" <<'PY'
import json, sys
name, err, *idle = sys.argv[1:]
rows = [json.loads(l) for l in open(err) if l.startswith("{")]
conns = sum(json.loads(l)["connected"] for f in idle for l in open(f) if '"ready"' in l)
a, b = rows[0], rows[-1]
per = lambda k: (b[k] - a[k]) / 1024 / (conns / 1000)
print(f"| {name} | {conns} | {a['rss_kb_after_gc']/1024:.1f} | {b['rss_kb_after_gc']/1024:.1f} | {per('rss_kb_after_gc'):.2f} | {per('heap_size_kb'):.2f} | {per('heap_capacity_kb'):.2f} |")
PY
}

echo "| server | connections | RSS before MB (after GC) | RSS after MB (after GC) | RSS MB per 1,000 | live JS heap MB per 1,000 | JS heap capacity MB per 1,000 |"
echo "| --- | ---: | ---: | ---: | ---: | ---: | ---: |"
probe bare-bun-reference bun -- bun
probe minimal-welcome sinal VARIANT= -- minimal
probe minimal+topic sinal VARIANT=topic -- minimal
probe minimal+jwt sinal VARIANT=jwt -- minimal
probe minimal+jwt+topic sinal VARIANT=jwt,topic -- minimal
probe sinal sinal -- sinal
