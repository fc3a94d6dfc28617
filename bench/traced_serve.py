"""`csms serve` with tracemalloc: SIGUSR1 writes a snapshot (bench/fleet.py --tracemalloc uses it).

    CSMS_TRACEMALLOC_FRAMES=8 python bench/traced_serve.py serve   # same arguments as `python -m csms`

The first SIGUSR1 starts tracing (start-up runs untraced: traced, it is too slow) and every SIGUSR1 writes
``$CSMS_TRACEMALLOC_DIR/snapshot-<n>.pickle`` (n = 1, 2, ...) from a thread, so the event loop is not
needed for it; what the second snapshot holds beyond the first was allocated between the two and is
still alive. tracemalloc slows the server several times over and itself costs memory: use it for where
the memory goes, not for how much (the RSS figures come from runs without it).
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


def _snapshot(out_dir: Path, frames: int) -> None:
    if not tracemalloc.is_tracing():
        tracemalloc.start(frames)
    n = next(_counter)
    snapshot = tracemalloc.take_snapshot()
    tmp = out_dir / f".snapshot-{n}.pickle"
    snapshot.dump(str(tmp))
    tmp.rename(out_dir / f"snapshot-{n}.pickle")


def main() -> None:
    frames = int(os.environ.get("CSMS_TRACEMALLOC_FRAMES", "8") or 8)
    out_dir = Path(os.environ.get("CSMS_TRACEMALLOC_DIR", "."))
    out_dir.mkdir(parents=True, exist_ok=True)

    def on_signal(*_: object) -> None:
        threading.Thread(target=_snapshot, args=(out_dir, frames), daemon=True).start()

    signal.signal(signal.SIGUSR1, on_signal)
    from csms.cli import main as csms_main

    sys.argv = ["csms", *sys.argv[1:]]
    csms_main()


if __name__ == "__main__":
    main()
