#!/usr/bin/env bash
# The whole test suite (`npm test`): the bun suites, then the Python client's pytest suite.
# Both always run; the exit code is non-zero when either fails.
set -u
cd "$(dirname "$0")/.."
bun test --timeout 20000 "$@"
bun_status=$?
bash clients/python/run-tests.sh
py_status=$?
if [ "$bun_status" -ne 0 ]; then exit "$bun_status"; fi
exit "$py_status"
