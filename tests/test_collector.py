"""satwatt's garbage collector policy (csms.collector): long-lived objects are kept out of collections,
and a complete collection still reclaims cycles among them."""

from __future__ import annotations

import gc
import weakref
from collections.abc import Iterator

import pytest

from csms import collector


class Node:
    def __init__(self) -> None:
        self.other: Node | None = None


@pytest.fixture
def policy() -> Iterator[None]:
    threshold = gc.get_threshold()
    collector.settle()
    try:
        yield
    finally:
        collector.stop()
        gc.set_threshold(*threshold)


def test_survivors_of_a_full_collection_are_frozen(policy: None) -> None:
    kept = [Node() for _ in range(100)]
    frozen_before = gc.get_freeze_count()
    gc.collect(2)  # as an automatic full collection would
    assert gc.get_freeze_count() >= frozen_before + len(kept)
    assert gc.get_threshold()[0] == collector.YOUNG_THRESHOLD


def test_a_complete_collection_reclaims_cycles_among_frozen_objects(policy: None) -> None:
    a, b = Node(), Node()
    a.other, b.other = b, a  # a cycle: only the cyclic collector can free it
    gc.collect(2)  # both survive (still referenced) and are frozen
    alive = weakref.ref(a)
    del a, b
    gc.collect(2)  # frozen: a full collection does not look at them
    assert alive() is not None
    collector.complete_collection()
    assert alive() is None


def test_stop_removes_the_callback() -> None:
    threshold = gc.get_threshold()
    collector.settle()
    collector.stop()
    gc.set_threshold(*threshold)
    assert collector._freeze_survivors not in gc.callbacks
    kept = [Node() for _ in range(100)]
    frozen = gc.get_freeze_count()
    gc.collect(2)
    assert gc.get_freeze_count() == frozen  # full collections no longer freeze their survivors
    assert kept
