#!/usr/bin/env bash
# `npm run bench`: runs the whole benchmark (see BENCHMARKS.md) and prints a markdown report.
# Options are environment variables read by bench/run.ts (BENCH_TARGETS, BENCH_MAX_SEC, ...).
set -euo pipefail
cd "$(dirname "$0")/.."

BUN=node_modules/.bin/bun
for tool in taskset node "$BUN"; do
  command -v "$tool" >/dev/null || { echo "bench: $tool is required (npm install; apt-get install util-linux nodejs)" >&2; exit 1; }
done
mkdir -p bench/results
PIDFILE=bench/results/.children
: >"$PIDFILE"

orchestrator=""
cleanup() {
  if [[ -n "$orchestrator" ]] && kill -0 "$orchestrator" 2>/dev/null; then kill "$orchestrator" 2>/dev/null || true; sleep 1; fi
  # whatever the orchestrator started and left behind (it kills them itself unless it was killed hard)
  while read -r pid; do
    [[ -n "$pid" && -r /proc/$pid/cmdline ]] || continue
    if tr '\0' ' ' </proc/"$pid"/cmdline | grep -qE 'bench/|src/main\.ts'; then kill -9 "$pid" 2>/dev/null || true; fi
  done <"$PIDFILE"
}
trap cleanup EXIT
trap 'exit 130' INT TERM

# the orchestrator mostly sleeps; keep it off the server's core
taskset -c 1 "$BUN" bench/run.ts "$@" &
orchestrator=$!
wait "$orchestrator"
