"""The phase loop shared by the NUTS/HMC and SGHMC runners: a tqdm bar and a timer per phase.

A run is a list of phases (warmup then sampling, burn-in then sampling), each ending at an
iteration count. :func:`run_phases` calls ``advance`` until the run's iteration reaches the
phase's end, skips phases already done (a resumed run), and reports each phase's elapsed time,
also when ``advance`` raises (an interrupt keeps the time spent so far).

Also the run's messages to the user: :func:`show_progress` (bars only on a terminal or in a
notebook, never in logs) and :func:`warn_user` (warnings that point at the user's line).
"""

from __future__ import annotations

import os
import sys
import time
import warnings
from collections.abc import Callable, Sequence
from dataclasses import dataclass
from types import FrameType

from tqdm.auto import tqdm

__all__ = ["Phase", "run_phases", "show_progress", "warn_user"]

_PACKAGE_DIR = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))


def show_progress(progress: bool) -> bool:
    """Whether to draw progress bars: ``progress`` and stderr is a terminal or a Jupyter kernel.

    Bars written to a file or a pipe (batch jobs, CI logs) are one line per refresh, so they
    are off there, as with tqdm's ``disable=None``.
    """
    if not progress:
        return False
    if type(sys.stderr).__module__.startswith("ipykernel"):
        return True
    isatty = getattr(sys.stderr, "isatty", None)
    try:
        return bool(isatty is not None and isatty())
    except ValueError:  # a closed stream
        return False


def warn_user(message: str, category: type[Warning] = UserWarning) -> None:
    """``warnings.warn`` attributed to the first caller outside the ``bayesact`` package
    (the user's ``mcmc(...)`` line, however deep inside the library the warning arises)."""
    frame: FrameType | None = sys._getframe(1)
    level = 2  # stacklevel 2: warn_user's caller
    while frame is not None and _inside_library(frame.f_code.co_filename):
        frame = frame.f_back
        level += 1
    warnings.warn(message, category, stacklevel=level)


def _inside_library(filename: str) -> bool:
    path = os.path.abspath(filename)
    return path.startswith(_PACKAGE_DIR + os.sep) or os.path.basename(path) == "contextlib.py"


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
                   desc=phase.label or phase.name, disable=not show_progress(progress), leave=True,
                   **bar_options)
        t0 = time.perf_counter()
        try:
            while iteration() < phase.end:
                if not advance(phase, bar):
                    return False
        finally:
            on_phase_end(phase, time.perf_counter() - t0)
            bar.close()
    return True
