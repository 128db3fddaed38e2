"""What the connector tests share: a fake clock for the HTTP seam and a context that wires a fake in."""

from __future__ import annotations

from collections.abc import Iterator
from contextlib import contextmanager

from instances.connectors._common import use_transport
from tests.connectors.fakes.base import ContractFake


class FakeClock:
    """Monotonic and wall clocks that only move when the HTTP client sleeps (so retries cost no time)."""

    def __init__(self, start: float = 1_800_000_000.0) -> None:
        self.now = start
        self.sleeps: list[float] = []

    def monotonic(self) -> float:
        return self.now

    def time(self) -> float:
        return self.now

    def sleep(self, seconds: float) -> None:
        self.sleeps.append(seconds)
        self.now += seconds


@contextmanager
def wired(fake: ContractFake, clock: FakeClock) -> Iterator[ContractFake]:
    """Within the block, every connector's HttpClient talks to ``fake`` and sleeps on ``clock``; at the end
    no request or response may have broken the API description."""
    with use_transport(
        lambda tracker_type: fake.session(), sleep=clock.sleep, clock=clock.monotonic, wall_clock=clock.time
    ):
        yield fake
    assert fake.violations == [], fake.violations
