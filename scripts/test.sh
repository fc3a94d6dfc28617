#!/usr/bin/env bash
# One command: set up (if needed) and run the whole test suite.
# The suite always runs on SQLite; set CSMS_TEST_DATABASE_URL=postgresql+asyncpg://... to run it on
# PostgreSQL as well (every database test is then run once per database).
set -euo pipefail
cd "$(dirname "$0")/.."
bash scripts/setup.sh
.venv/bin/ruff check .
exec .venv/bin/python -m pytest "$@"
