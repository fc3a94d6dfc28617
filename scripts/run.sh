#!/usr/bin/env bash
# One command: set up (if needed) and run satwatt on embedded defaults (SQLite, simulated Lightning).
set -euo pipefail
cd "$(dirname "$0")/.."
bash scripts/setup.sh
exec .venv/bin/csms serve "$@"
