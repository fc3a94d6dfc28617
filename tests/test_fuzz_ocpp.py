"""A small, bounded run of bench/fuzz_ocpp.py against the test server: mutated OCPP 1.6 and 2.0.1
frames (hostile values, cut and altered frames, invalid UTF-8) get no InternalError, no ERROR in the
log, and drop no connection (a 1007 close after invalid UTF-8 is the one close RFC 6455 requires)."""

from __future__ import annotations

import logging

import pytest

from bench.fuzz_ocpp import fuzz, register_chargers
from tests.conftest import RunningServer

FRAMES = 600


async def test_fuzzed_frames_get_no_internal_error_and_drop_no_connection(
    server: RunningServer, caplog: pytest.LogCaptureFixture
) -> None:
    caplog.set_level(logging.WARNING)
    chargers = await register_chargers(server.http_url, server.api_key, "FZ", connections=1)
    tally = await fuzz(server.ocpp_url, chargers, frames=FRAMES, seconds=300, seed=11)
    assert tally.frames == FRAMES
    assert tally.internal_errors == []
    assert tally.dropped == 0, tally.drops
    assert tally.closed_1007 > 0  # invalid UTF-8 was among the frames, and closed as it must be
    rejected = sum(n for kind, n in tally.answers.items() if kind.startswith("CALLERROR"))
    assert rejected > FRAMES // 2 and tally.answers["CALLRESULT"] > 0  # both kinds of answer were seen
    errors = [f"{r.name}: {r.getMessage()}" for r in caplog.records if r.levelno >= logging.ERROR]
    assert errors == []
