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
    """One options object, checked once: a bad depth or block_bytes is refused whatever the inputs
    (here not even tensors), by every public entry."""
    for fn in (K.nngp, K.ntk, K.nngp_ntk):
        with pytest.raises(ValueError, match="depth must be >= 0"):
            fn("not a tensor", activation="relu", depth=-1)  # type: ignore[arg-type]
        with pytest.raises(ValueError, match="block_bytes must be a positive integer"):
            fn("not a tensor", activation="relu", depth=1, block_bytes=0)  # type: ignore[arg-type]
    assert isinstance(K.dual_activation("relu"), K.ABReLUDual)
    # per-layer stds are squared layer by layer: K⁰ = W_std,0²·⟨x, x'⟩/d + b_std,0² (depth 0)
    x = torch.tensor([[1.0, 2.0], [0.5, -1.0]], dtype=torch.float64)
    k0 = K.nngp(x, activation="relu", depth=0, weight_std=[1.5], bias_std=0.1)
    torch.testing.assert_close(k0, 2.25 * (x @ x.T) / 2 + 0.01, rtol=1e-12, atol=0)
