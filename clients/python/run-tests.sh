#!/usr/bin/env bash
# Runs the Python client's tests against a real sinal. They need pytest and websockets:
#   python3 -m pip install pytest==9.2.0 websockets==17.4
# Without them the suite is skipped when run by hand, and fails under CI=true.
set -u
cd "$(dirname "$0")/../.."
if ! python3 -c "import pytest, websockets" 2>/dev/null; then
  if [ "${CI:-}" = "true" ]; then
    echo "pytest and websockets are required under CI (python3 -m pip install pytest==9.2.0 websockets==17.4)"
    exit 1
  fi
  echo "SKIPPED the Python client tests: python3 -m pip install pytest==9.2.0 websockets==17.4 to run them"
  exit 0
fi
PYTHONDONTWRITEBYTECODE=1 exec python3 -m pytest -p no:cacheprovider -q -rfE clients/python/tests
