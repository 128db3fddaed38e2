"""Fixtures for the Connectors II tests: a fake clock, and connectors wired to in-memory fake servers.

``wire(server)`` routes every HttpClient the connectors build (``_common.build_http``) to ``server`` through
``_common.use_transport``, with the fake clock's sleep and clocks, so retries and rate limits cost no time.
"""

from __future__ import annotations

import json
from collections.abc import Iterator
from contextlib import contextmanager
from typing import Any

import pytest

from instances.connectors import _common
from tests.connectors2.fakes.base import FakeClock, FakeServer


@pytest.fixture
def clock() -> FakeClock:
    return FakeClock()


@contextmanager
def wire(server: FakeServer) -> Iterator[FakeServer]:
    with _common.use_transport(
        server.session_factory,
        sleep=server.clock.sleep,
        clock=server.clock.monotonic,
        wall_clock=server.clock.time,
    ):
        yield server


def make_instance(
    tracker_type: str, url: str, credentials: dict[str, Any], settings: dict[str, Any], *, save: bool = False
):  # type: ignore[no-untyped-def]
    from instances.models import Instance

    instance = Instance(
        name=f"Test {tracker_type}",
        tracker_type=tracker_type,
        url=url,
        credentials=json.dumps(credentials),
        settings={"rate_limit_per_s": 1000, **settings},
    )
    if save:
        instance.save()
    return instance
