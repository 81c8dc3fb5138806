"""The kernels package says true things about itself: where each dual lives, one docs source."""

from __future__ import annotations

import importlib
import inspect
import re

import pytest
import torch

from bayesact import kernels as K
from bayesact.kernels import dual


def _dual_homes() -> dict[str, list[str]]:
    """``module: [classes]`` from the list in bayesact.kernels.dual's docstring."""
    homes = {}
    for module, names in re.findall(r"^\* ``(\w+)``: (.*)$", dual.__doc__ or "", re.MULTILINE):
        homes[module] = re.findall(r"``(\w+Dual)``", names)
    return homes


def test_dual_module_names_the_modules_that_hold_each_dual() -> None:
    homes = _dual_homes()
    assert homes, "bayesact.kernels.dual lists no modules"
    listed = []
    for module, names in homes.items():
        mod = importlib.import_module(f"bayesact.kernels.{module}")
        for name in names:
            cls = mod.__dict__.get(name)
            assert isinstance(cls, type), f"{name} is not in {module}"
            assert cls.__module__ == mod.__name__, f"{name} is not defined in {module}"
            assert issubclass(cls, K.DualActivation)
            listed.append(name)
    exported = {
        name for name in K.__all__
        if isinstance(getattr(K, name), type) and issubclass(getattr(K, name), K.DualActivation)
        and getattr(K, name) is not K.DualActivation
    }
    assert sorted(listed) == sorted(exported)
    for module in re.findall(r"``resolve\.(\w+)``", dual.__doc__ or ""):
        assert hasattr(importlib.import_module("bayesact.kernels.resolve"), module)


_SHARED = [
    K.nngp, K.ntk, K.nngp_ntk, K.empirical_nngp, K.empirical_ntk, K.empirical_nngp_ntk, K.NNGPKernel,
    K.NTKKernel,
]


@pytest.mark.parametrize("obj", _SHARED, ids=lambda o: o.__name__)
def test_docstrings_document_every_parameter_and_have_no_placeholder(obj: object) -> None:
    doc = inspect.getdoc(obj) or ""
    assert not re.search(r"^\s*\{\w+\}\s*$", doc, re.MULTILINE)
    section = re.split(r"\n\n\w+:\n", doc.split("Args:\n", 1)[1])[0]
    documented = re.findall(r"^    (\*\*\w+|\w+): ", section, re.MULTILINE)
    target = obj.__init__ if isinstance(obj, type) else obj  # type: ignore[misc]
    params = [
        ("**" if p.kind is p.VAR_KEYWORD else "") + p.name
        for p in inspect.signature(target).parameters.values() if p.name != "self"
    ]
    assert documented == params


def test_the_three_functions_share_one_args_text() -> None:
    sections = [(inspect.getdoc(f) or "").split("Args:\n", 1)[1] for f in (K.nngp, K.ntk, K.nngp_ntk)]
    sections = [s.split("Returns:")[0] for s in sections]
    assert sections[0] == sections[1] == sections[2]


def test_options_are_checked_before_the_inputs_are_read() -> None:
    """One options object, checked once: a bad depth or block_bytes is refused whatever the inputs."""
    from bayesact.kernels.recursion import _Recursion

    with pytest.raises(ValueError, match="depth must be >= 0"):
        _Recursion("relu", -1)
    with pytest.raises(ValueError, match="block_bytes must be a positive integer"):
        _Recursion("relu", 1, block_bytes=0)
    spec = _Recursion("relu", 2, weight_std=[1.0, 1.5, 2.0])
    assert isinstance(spec.dual, K.ABReLUDual)
    w2, b2 = spec.variances(torch.zeros(1, 2, dtype=torch.float64))
    assert [float(w) for w in w2] == [1.0, 2.25, 4.0] and [float(b) for b in b2] == [0.1 * 0.1] * 3
