"""The shared phase loop: skipping finished phases, stopping, and timing through interrupts."""

from __future__ import annotations

import pytest

from bayesact.infer.phases import Phase, run_phases


class _Run:
    def __init__(self, start: int = 0, stop_at: int | None = None, raise_at: int | None = None):
        self.iteration = start
        self.stop_at = stop_at
        self.raise_at = raise_at
        self.seen: list[tuple[str, int]] = []
        self.ended: list[str] = []

    def advance(self, phase: Phase, bar) -> bool:
        if self.iteration == self.raise_at:
            raise KeyboardInterrupt
        if self.iteration == self.stop_at:
            return False
        self.seen.append((phase.name, self.iteration))
        self.iteration += 1
        bar.update(1)
        return True

    def end(self, phase: Phase, seconds: float) -> None:
        assert seconds >= 0
        self.ended.append(phase.name)

    def go(self) -> bool:
        phases = [Phase("warmup", 0, 3), Phase("sample", 3, 5)]
        return run_phases(phases, lambda: self.iteration, self.advance, self.end, progress=False)


def test_every_phase_runs_to_its_end_in_order():
    run = _Run()
    assert run.go()
    assert run.seen == [("warmup", 0), ("warmup", 1), ("warmup", 2), ("sample", 3), ("sample", 4)]
    assert run.ended == ["warmup", "sample"]


def test_a_resumed_run_skips_finished_phases():
    run = _Run(start=4)
    assert run.go()
    assert run.seen == [("sample", 4)] and run.ended == ["sample"]


def test_advance_returning_false_stops_the_run():
    run = _Run(stop_at=1)
    assert not run.go()
    assert run.seen == [("warmup", 0)] and run.ended == ["warmup"]


def test_an_interrupt_still_reports_the_phase_time():
    run = _Run(raise_at=4)
    with pytest.raises(KeyboardInterrupt):
        run.go()
    assert run.ended == ["warmup", "sample"]
