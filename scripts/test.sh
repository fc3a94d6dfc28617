#!/usr/bin/env bash
# One command: set up (if needed) and run the whole test suite.
# The suite always runs on SQLite; set CSMS_TEST_DATABASE_URL=postgresql+asyncpg://... to run it on
# PostgreSQL as well (every database test is then run once per database).
set -euo pipefail
cd "$(dirname "$0")/.."
bash scripts/setup.sh
# the browser tests (tests/web, marker "browser") drive Debian's chromium; install it once when missing
if ! command -v chromium >/dev/null 2>&1 && command -v apt-get >/dev/null 2>&1 && [ "$(id -u)" = 0 ]; then
  echo "==> installing chromium for the browser tests (apt-get)"
  export DEBIAN_FRONTEND=noninteractive
  apt-get install -y -qq --no-install-recommends chromium >/dev/null 2>&1 ||
    { apt-get update -qq >/dev/null && apt-get install -y -qq --no-install-recommends chromium >/dev/null; } ||
    echo "chromium could not be installed: the browser tests will be skipped (CI fails them)" >&2
fi
.venv/bin/ruff check .
exec .venv/bin/python -m pytest "$@"
