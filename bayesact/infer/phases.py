"""The phase loop shared by the NUTS/HMC and SGHMC runners: a tqdm bar and a timer per phase.

A run is a list of phases (warmup then sampling, burn-in then sampling), each ending at an
iteration count. :func:`run_phases` calls ``advance`` until the run's iteration reaches the
phase's end, skips phases already done (a resumed run), and reports each phase's elapsed time,
also when ``advance`` raises (an interrupt keeps the time spent so far).
"""

from __future__ import annotations

import time
from collections.abc import Callable, Sequence
from dataclasses import dataclass

from tqdm.auto import tqdm

__all__ = ["Phase", "run_phases"]


@dataclass(frozen=True)
class Phase:
    """A phase of a run: iterations ``begin`` (inclusive) to ``end`` (exclusive), shown as ``label``."""

    name: str
    begin: int
    end: int
    label: str = ""


def run_phases(
    phases: Sequence[Phase],
    iteration: Callable[[], int],
    advance: Callable[[Phase, tqdm], bool],
    on_phase_end: Callable[[Phase, float], None],
    progress: bool,
    **bar_options: object,
) -> bool:
    """Run ``advance(phase, bar)`` until ``iteration()`` reaches each phase's end.

    ``advance`` makes one iteration (and updates the bar); returning ``False`` stops the whole
    run. ``on_phase_end(phase, seconds)`` runs after every phase that started, also when
    ``advance`` raises. Returns ``True`` when every phase ran to its end.
    """
    for phase in phases:
        if iteration() >= phase.end:
            continue
        bar = tqdm(total=phase.end - phase.begin, initial=iteration() - phase.begin,
                   desc=phase.label or phase.name, disable=not progress, leave=True, **bar_options)
        t0 = time.perf_counter()
        try:
            while iteration() < phase.end:
                if not advance(phase, bar):
                    return False
        finally:
            on_phase_end(phase, time.perf_counter() - t0)
            bar.close()
    return True
