"""Argument checks shared by the priors and the models: errors that name the argument."""

from __future__ import annotations

import math
from typing import Any


def check_int(value: Any, name: str, minimum: int = 1) -> int:
    """``value`` if it is an int (not a bool) >= ``minimum``; else a ValueError naming ``name``."""
    if isinstance(value, bool) or not isinstance(value, int) or value < minimum:
        expected = "a positive int" if minimum == 1 else f"an int >= {minimum}"
        raise ValueError(f"'{name}' must be {expected}, got {value!r}")
    return value


def check_real(value: Any, name: str, *, allow_zero: bool = False) -> float:
    """``value`` as a float if it is a finite real number > 0 (>= 0 with ``allow_zero``)."""
    ok = isinstance(value, int | float) and not isinstance(value, bool) and math.isfinite(value)
    if not ok or value < 0 or (value == 0 and not allow_zero):
        expected = ">= 0" if allow_zero else "> 0"
        raise ValueError(f"'{name}' must be a finite number {expected}, got {value!r}")
    return float(value)


class ArgumentTypeError(TypeError, ValueError):
    """An argument that does not satisfy the protocol it is typed with.

    A TypeError; also a ValueError, which these checks raised before the protocols existed, so code
    catching ValueError keeps working.
    """


def check_protocol(value: Any, protocol: type, name: str, expected: str) -> None:
    """An :class:`ArgumentTypeError` naming ``name`` unless ``isinstance(value, protocol)``."""
    if not isinstance(value, protocol):
        raise ArgumentTypeError(f"'{name}' must {expected}, got {type(value).__name__}")
