"""The gateway's cyclic-GC tuning (issue 14: the c1024 latency tail was the collector).

While a gateway runs, the young generation is ``GC_YOUNG_THRESHOLD`` allocations (request
objects die by refcount before a collection promotes them); when it stops, the process's
previous thresholds come back (several apps share a test process). ``0`` leaves CPython's.
"""

from __future__ import annotations

import gc

from app.state import GC_OLDER_THRESHOLDS
from tests.support import gateway, settings


async def test_a_running_gateway_uses_a_large_young_generation_and_restores_it() -> None:
    before = gc.get_threshold()
    assert before[0] != 250_000
    async with gateway(settings()) as (client, _):
        assert gc.get_threshold() == (250_000, *GC_OLDER_THRESHOLDS)
        assert (await client.get("/health")).status_code == 200
    assert gc.get_threshold() == before


async def test_zero_keeps_the_interpreter_thresholds() -> None:
    before = gc.get_threshold()
    async with gateway(settings(gc_young_threshold=0)):
        assert gc.get_threshold() == before
    assert gc.get_threshold() == before
