"""`csms serve` with tracemalloc: SIGUSR1 writes a snapshot (bench/fleet.py --tracemalloc uses it).

    PYTHONTRACEMALLOC=8 python bench/traced_serve.py serve        # same arguments as `python -m csms`

Each SIGUSR1 writes ``$CSMS_TRACEMALLOC_DIR/snapshot-<n>.pickle`` (n = 1, 2, ...) from a thread, so the
event loop is not needed for it. tracemalloc slows the server several times over and itself costs
memory: use it for where the memory goes, not for how much (the RSS figures come from runs without it).
"""

from __future__ import annotations

import itertools
import os
import signal
import sys
import threading
import tracemalloc
from pathlib import Path

_counter = itertools.count(1)


def _snapshot(out_dir: Path) -> None:
    n = next(_counter)
    snapshot = tracemalloc.take_snapshot()
    tmp = out_dir / f".snapshot-{n}.pickle"
    snapshot.dump(str(tmp))
    tmp.rename(out_dir / f"snapshot-{n}.pickle")


def main() -> None:
    if not tracemalloc.is_tracing():
        tracemalloc.start(int(os.environ.get("PYTHONTRACEMALLOC", "8") or 8))
    out_dir = Path(os.environ.get("CSMS_TRACEMALLOC_DIR", "."))
    out_dir.mkdir(parents=True, exist_ok=True)
    signal.signal(
        signal.SIGUSR1, lambda *_: threading.Thread(target=_snapshot, args=(out_dir,), daemon=True).start()
    )
    from csms.cli import main as csms_main

    sys.argv = ["csms", *sys.argv[1:]]
    csms_main()


if __name__ == "__main__":
    main()
