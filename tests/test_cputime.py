"""CPU accounting by stage (eventmail/cputime.py): nested stages are exclusive, and a timed coroutine is charged for its own steps only."""

from __future__ import annotations

import asyncio
from collections.abc import Iterator

import pytest

from eventmail import cputime


class Clock:
    """A thread-CPU clock the test advances by hand: each 'work' is a known number of seconds."""

    def __init__(self) -> None:
        self.now = 0.0

    def __call__(self) -> float:
        return self.now

    def work(self, seconds: float) -> None:
        self.now += seconds


@pytest.fixture
def clock(monkeypatch: pytest.MonkeyPatch) -> Iterator[Clock]:
    c = Clock()
    monkeypatch.setattr(cputime, "_clock", c)
    monkeypatch.setattr(cputime, "_on", [False])
    yield c


def spent(before: dict[str, float], name: str) -> float:
    return cputime.totals().get(name, 0.0) - before.get(name, 0.0)


def test_an_inner_stage_is_not_also_charged_to_the_outer(clock: Clock) -> None:
    before = cputime.totals()
    with cputime.stage("t-outer"):
        clock.work(1)
        with cputime.stage("t-inner"):
            clock.work(10)
        clock.work(2)
    assert spent(before, "t-outer") == pytest.approx(3)
    assert spent(before, "t-inner") == pytest.approx(10)


def test_a_timed_coroutine_is_charged_for_its_steps_not_for_others_while_it_waits(clock: Clock) -> None:
    async def main() -> None:
        gate: asyncio.Future[None] = asyncio.get_running_loop().create_future()

        async def measured() -> str:
            clock.work(5)
            await gate  # meanwhile another task works for 100
            clock.work(3)
            with cputime.stage("t-nested"):  # a stage inside a step is that stage's
                clock.work(7)
            return "done"

        async def other() -> None:
            await asyncio.sleep(0)
            clock.work(100)
            gate.set_result(None)

        result, _ = await asyncio.gather(cputime.timed("t-measured", measured()), other())
        assert result == "done"

    before = cputime.totals()
    asyncio.run(main())
    assert spent(before, "t-measured") == pytest.approx(8)
    assert spent(before, "t-nested") == pytest.approx(7)
    # Charged on the main thread (the event loop's): what bench/smtp.py subtracts from it.
    assert spent(before, "main thread staged") == pytest.approx(15)


def test_a_cancelled_timed_coroutine_gets_the_cancellation_and_leaves_no_stage_open(clock: Clock) -> None:
    cleaned: list[bool] = []

    async def main() -> None:
        async def forever() -> None:
            try:
                await asyncio.sleep(3600)
            finally:
                cleaned.append(True)

        task = asyncio.ensure_future(cputime.timed("t-cancelled", forever()))
        await asyncio.sleep(0)
        task.cancel()
        with pytest.raises(asyncio.CancelledError):
            await task

    asyncio.run(main())
    assert cleaned == [True]
    before = cputime.totals()
    with cputime.stage("t-after"):
        clock.work(1)
    assert spent(before, "t-after") == pytest.approx(1)
    assert spent(before, "t-cancelled") == 0


def test_nothing_is_counted_and_no_clock_read_until_the_first_request(monkeypatch: pytest.MonkeyPatch) -> None:
    """A thread's CPU clock is a system call: a server nobody asked for its stages reads none
    (stage and timed do nothing); the first `totals()` (the control socket's `stages`) starts it."""
    reads: list[int] = []

    def counting_clock() -> float:
        reads.append(1)
        return float(len(reads))

    monkeypatch.setattr(cputime, "_clock", counting_clock)
    monkeypatch.setattr(cputime, "_on", [False])

    async def work() -> str:
        with cputime.stage("t-off-inner"):
            await asyncio.sleep(0)
        return "done"

    async def main() -> str:
        return await cputime.timed("t-off", work())

    assert asyncio.run(main()) == "done"
    with cputime.stage("t-off"):
        pass
    assert reads == []
    before = cputime.totals()
    assert "t-off" not in before and "t-off-inner" not in before
    with cputime.stage("t-on"):
        pass
    assert len(reads) == 2
    assert spent(before, "t-on") == pytest.approx(1)
