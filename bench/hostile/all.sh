#!/usr/bin/env bash
# The hostile-client benches of issue 10 against one checkout, one after the other (never two at
# once): bench/hostile/replays.ts, channels.ts, nesting.ts, then bench/soak/run.ts; about 5 minutes.
# Each prints its report as it goes; their one-line summaries are repeated at the end.
#   bash bench/hostile/all.sh [--root <checkout>]      (default: this repository)
set -euo pipefail
cd "$(dirname "$0")/../.."
BUN=node_modules/.bin/bun
summaries=()
for script in bench/hostile/replays.ts bench/hostile/channels.ts bench/hostile/nesting.ts bench/soak/run.ts; do
  # on core 1: the server under test runs on core 0
  summaries+=("$(taskset -c 1 "$BUN" "$script" "$@" | tee /dev/stderr | tail -n 1)")
done
echo
printf '%s\n' "${summaries[@]}"
