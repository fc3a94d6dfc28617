#!/usr/bin/env bash
# One command: set up (if needed) and run the demo: satwatt, simulated chargers and cars paying sats.
# Arguments go to `csms demo` (e.g. --duration 120 --chargers 6). Run satwatt for real chargers with
# `.venv/bin/csms serve`.
set -euo pipefail
cd "$(dirname "$0")/.."
bash scripts/setup.sh
exec .venv/bin/csms demo "$@"
