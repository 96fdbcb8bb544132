"""The pipeline supervisor: when to restart a failed component, and when to give up."""

from __future__ import annotations

import asyncio

import pytest

from services.runner import Component, PipelineFailed, Supervisor, restart_delay

POLICY = {"base_s": 0.5, "cap_s": 4.0, "max_restarts": 3, "window_s": 60.0}


@pytest.mark.parametrize(
    ("failures", "now", "expected"),
    [
        ([], 100.0, 0.5),  # first failure: restart after the base delay
        ([99.0], 100.0, 1.0),  # second within the window: doubled
        ([98.0, 99.0], 100.0, 2.0),  # third: doubled again
        ([97.0, 98.0, 99.0], 100.0, None),  # budget of 3 restarts spent: give up
        ([10.0, 20.0, 30.0], 100.0, 0.5),  # old failures left the window: start over
        ([60.0, 70.0], 100.0, 2.0),  # two recent ones count
    ],
)
def test_restart_delay(failures: list[float], now: float, expected: float | None) -> None:
    assert restart_delay(failures, now, **POLICY) == expected


def test_restart_delay_is_capped() -> None:
    assert restart_delay([1.0] * 9, 2.0, base_s=1, cap_s=4, max_restarts=20, window_s=60) == 4


class Flaky:
    """A service whose ``watch`` fails at once: counts starts and stops."""

    starts = 0
    stops = 0

    async def start(self) -> None:
        Flaky.starts += 1

    async def stop(self, timeout_s: float = 10.0) -> None:
        Flaky.stops += 1


async def _crash(_: object) -> None:
    await asyncio.sleep(0.01)
    raise RuntimeError("boom")


async def test_a_component_that_keeps_failing_is_restarted_then_fails_the_pipeline() -> None:
    Flaky.starts = Flaky.stops = 0
    supervisor = Supervisor(
        [Component("flaky", Flaky, watch=_crash)], base_s=0.01, cap_s=0.02, max_restarts=2
    )
    await supervisor.start()
    with pytest.raises(PipelineFailed, match="flaky failed 3 times"):
        await asyncio.wait_for(supervisor.failed(), 5)
    await supervisor.stop()
    assert Flaky.starts == 3  # the first start and two restarts
    assert Flaky.stops == 3  # every failed instance was stopped
