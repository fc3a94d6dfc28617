"""How satwatt runs Python's cyclic garbage collector: off the hot path, and off the live state.

Reference counting frees almost everything a message allocates; the cyclic collector is only needed
for cycles. Left at its defaults it walks every tracked object in a full collection, and those come
each time the long-lived heap grows by a quarter: with thousands of chargers connected (millions of
objects: their connections, sessions and settlements) one full collection takes seconds, during which
no charger is answered, and they come often while a fleet connects.

So: what start-up built is frozen (moved to the permanent generation, which collections skip); the
youngest generation is collected after 20,000 allocations instead of 700; and after each full
collection its survivors are frozen too, so a full collection walks only what became long-lived since
the last one. Frozen objects that later become cyclic garbage (a charger's connection objects after it
disconnects) are reclaimed by a complete collection every ``COMPLETE_EVERY_S`` (everything unfrozen,
collected, frozen again): one pause of the whole heap every quarter of an hour instead of many.
"""

from __future__ import annotations

import asyncio
import contextlib
import gc
import logging
import time
from typing import Any

log = logging.getLogger("csms.collector")

YOUNG_THRESHOLD = 20_000
COMPLETE_EVERY_S = 900.0


def _freeze_survivors(phase: str, info: dict[str, Any]) -> None:
    if phase == "stop" and info.get("generation") == 2:
        gc.freeze()


def settle() -> None:
    """Freeze what start-up built and tune the thresholds (call once the app is ready)."""
    gc.collect()
    gc.freeze()
    _, middle, old = gc.get_threshold()
    gc.set_threshold(YOUNG_THRESHOLD, middle, old)
    if _freeze_survivors not in gc.callbacks:
        gc.callbacks.append(_freeze_survivors)


def complete_collection() -> float:
    """Collect everything, frozen or not, and freeze the survivors again; the seconds it took."""
    started = time.perf_counter()
    gc.unfreeze()
    gc.collect()
    gc.freeze()
    return time.perf_counter() - started


async def run_complete_collections(every_s: float = COMPLETE_EVERY_S) -> None:
    """Every ``every_s``: a complete collection (reclaims cycles among frozen objects)."""
    while True:
        await asyncio.sleep(every_s)
        seconds = complete_collection()
        log.info("complete garbage collection: %.2f s, %d objects kept", seconds, gc.get_freeze_count())


def stop() -> None:
    """No more freezing after full collections (the app is shutting down; several run in one test
    process). What is frozen stays frozen: unfreezing would make the next start's collection walk it."""
    with contextlib.suppress(ValueError):
        gc.callbacks.remove(_freeze_survivors)
