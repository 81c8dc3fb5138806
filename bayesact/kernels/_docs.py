"""One source for the parameter documentation that the kernel functions and classes share.

A docstring names a placeholder ``{args}`` (or any other key) on a line of its own, indented like
the entries of its ``Args:`` section; :func:`document` replaces it with text built by
:func:`args_section`. The docstrings are complete at import time (``help``, ``inspect.getdoc`` and
mkdocstrings, which the API pages run with ``force_inspection``, all see the final text).
"""

from __future__ import annotations

import textwrap
from collections.abc import Callable
from typing import TypeVar

__all__ = ["PARAMS", "RAISES", "args_section", "document", "raises_section"]

_T = TypeVar("_T")

#: Google-style ``Args:`` entries of the parameters shared by nngp/ntk/nngp_ntk (and, where the
#: meaning is the same, by the Monte Carlo estimators and the GPyTorch kernels)
PARAMS: dict[str, str] = {
    "x1": "inputs of shape (..., n, d); leading batch dimensions broadcast with x2's.",
    "x2": "inputs of shape (..., m, d); ``None`` means x1.",
    "activation": (
        "a ``bayesact.activations`` registry name, a module from ``bayesact.activations.get(...)`` "
        "(its parameters receive gradients), a ``DualActivation``, or any elementwise callable "
        "(evaluated by Hermite quadrature)."
    ),
    "depth": "number of hidden layers (≥ 0); the readout layer is included.",
    "weight_std": (
        "W_std (> 0): a float or a tensor broadcasting with the batch shape, shared by all Dense "
        "layers, or a list/tuple of depth + 1 of them, entry l for Dense layer l (entry 0 the input "
        "layer, entry depth the readout)."
    ),
    "bias_std": (
        "b_std (≥ 0, default 0.1 like ``NNGPKernel``), shared or per layer like ``weight_std``."
    ),
    "diag": "return only K(x1_i, x2_i), shape (..., n), without forming the n × m matrix.",
    "quadrature_degree": "Hermite degree for activations without a closed form (default 64).",
    "fused": (
        "``\"auto\"`` (default): eager at once; once the eager calls of one configuration with "
        "outputs of ≥ 65,536 entries have taken 2 s in all, its layer recursion (one ``torch.compile`` "
        "kernel per block, CPU or CUDA) compiles in a background thread (from the third call after "
        "that) and calls switch to it once "
        "verified against eager (no call waits for a compile). ``True``: compile at the first call "
        "(which waits). ``False``: always eager (bit-reproducible between calls)."
    ),
    "block_bytes": (
        "bound on the working memory of one row block (default 64 MiB); blocks under autograd are "
        "checkpointed, so the bound also holds for the backward pass. The result is bit-identical to "
        "one block (gradients w.r.t. shared stds agree to rounding only: they are sums over all "
        "entries, accumulated block by block)."
    ),
}

#: the ``Raises:`` entries of nngp/ntk/nngp_ntk
RAISES = (
    "ValueError: mismatched feature dimensions, depth < 0, weight_std ≤ 0 or bias_std < 0, a per-layer "
    "std sequence whose length is not depth + 1, non-finite inputs, or an activation that is not "
    "elementwise.",
    "TypeError: arguments of the wrong type.",
)

_INDENT = " " * 8  # the entries of a section in a method or function docstring


def _entries(entries: list[str]) -> str:
    """Entries wrapped to the project's line length; the first line unindented (the placeholder's)."""
    lines: list[str] = []
    for entry in entries:
        lines += textwrap.wrap(
            entry, width=110 - len(_INDENT), subsequent_indent="    ", break_on_hyphens=False,
            break_long_words=False,
        )
    return ("\n" + _INDENT).join(lines)


def args_section(names: str, **own: str) -> str:
    """The entries for the space-separated parameter ``names``: ``own[name]`` if given, else PARAMS.

    ``kwargs`` in ``names`` is written ``**kwargs``.
    """
    entries = []
    for name in names.split():
        text = own[name] if name in own else PARAMS[name]
        entries.append(f"{'**kwargs' if name == 'kwargs' else name}: {text}")
    return _entries(entries)


def raises_section() -> str:
    return _entries(list(RAISES))


def document(**sections: str) -> Callable[[_T], _T]:
    """Decorator: each ``{key}`` in the docstring of the function or class becomes ``sections[key]``."""

    def apply(obj: _T) -> _T:
        doc = obj.__doc__
        for key, text in sections.items():
            if doc is None or "{" + key + "}" not in doc:
                raise ValueError(f"document: the docstring of {obj!r} has no placeholder {{{key}}}")
            doc = doc.replace("{" + key + "}", text)
        obj.__doc__ = doc
        return obj

    return apply
