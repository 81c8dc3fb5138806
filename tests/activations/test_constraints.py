"""Trainable parameters with a constrained domain stay in it: raw_<name> parameters (GPyTorch convention)."""

from __future__ import annotations

import pytest
import torch

from bayesact import activations as A
from bayesact.activations.registry import positive_to_softplus_raw, softplus_to_positive, spec

from .reference import CASES

# Every trainable parameter whose domain is constrained, as (activation, parameter, its case values).
CONSTRAINED = {
    ("softplus", "beta"), ("tempered_sigmoid", "temperature"), ("elephant", "a"), ("elephant", "d"),
    ("cauchy", "d"), ("gaussian", "s"), ("siren", "omega0"), ("snake", "a"), ("smelu", "beta"),
    ("apa", "kappa"), ("apa", "lam"), ("aglu", "kappa"), ("aglu", "lam"), ("elu", "alpha"),
    ("mixture", "weights"), ("softmax", "temperature"), ("sparsemax", "temperature"),
    ("topk_softmax", "temperature"), ("sdm", "q"), ("sdm", "d"),
}  # fmt: skip
MAP_PARAMS = {"softmax": {}, "sparsemax": {}, "stablemax": {}, "topk_softmax": {"k": 2},
              "sdm": {"q": 3.0, "d": 0.6}}  # fmt: skip


def _params(name: str) -> dict:
    return MAP_PARAMS[name] if name in MAP_PARAMS else CASES[name].params


def test_the_constrained_parameters_are_exactly_those_listed() -> None:
    found = {(n, k) for n in A.names(None) for k, c in spec(n).constraints.items() if c.to_raw is not None}
    assert found == CONSTRAINED


@pytest.mark.parametrize(("name", "key"), sorted(CONSTRAINED))
def test_state_dict_names_and_initial_values(name: str, key: str) -> None:
    module = A.get(name, **_params(name))
    frozen = A.get(name, trainable=False, **_params(name))
    assert f"raw_{key}" in module.state_dict() and key not in module.state_dict()
    assert key in frozen.state_dict() and f"raw_{key}" not in frozen.state_dict()
    # the initial value is the given one (float32 rounding of the softplus/sigmoid/softmax round trip)
    torch.testing.assert_close(getattr(module, key), getattr(frozen, key), rtol=4e-7, atol=1e-30)
    # state dicts load across the two forms (and from state dicts saved before raw_ parameters)
    clone = A.get(name, **_params(name))
    clone.load_state_dict(frozen.state_dict())
    torch.testing.assert_close(getattr(clone, key), getattr(frozen, key), rtol=4e-7, atol=1e-30)
    frozen.load_state_dict(module.state_dict())
    torch.testing.assert_close(getattr(frozen, key), getattr(module, key))


@pytest.mark.parametrize(("name", "key"), sorted(CONSTRAINED))
@pytest.mark.parametrize("direction", [1.0, -1.0])
def test_adam_with_a_large_step_cannot_leave_the_domain(name: str, key: str, direction: float) -> None:
    """100 Adam steps of lr 1 pushing the parameter down (and up): an unconstrained one ends near ±100."""
    module = A.get(name, **_params(name))
    optimizer = torch.optim.Adam(module.parameters(), lr=1.0)
    for _ in range(100):
        optimizer.zero_grad()
        value = getattr(module, key)
        (direction * value[0] if value.dim() else direction * value).backward()
        optimizer.step()
    value = getattr(module, key).detach()
    constraint = spec(name).constraints[key]
    assert constraint(value), f"{name}.{key} left its domain ({constraint.description}): {value}"
    assert torch.isfinite(value).all()
    x = torch.randn(4, 6) * 3
    assert torch.isfinite(module(x)).all()


def test_smelu_beta_stays_positive_under_a_loss_that_drives_it_negative() -> None:
    """The issue's case: minimising the output pushes beta down; a plain parameter ends at -0.69."""
    x = torch.linspace(-2, 2, 64)
    module = A.get("smelu", beta=0.5)
    plain = torch.nn.Parameter(torch.tensor(0.5))  # the storage before raw_beta, for comparison
    optimizers = [torch.optim.Adam(module.parameters(), lr=0.1), torch.optim.Adam([plain], lr=0.1)]
    for _ in range(60):
        for opt in optimizers:
            opt.zero_grad()
        module(x).sum().backward()
        spec("smelu").fn(x, beta=plain).sum().backward()  # the unvalidated forward, as modules ran it
        for opt in optimizers:
            opt.step()
    assert plain.item() < -0.5  # measured -0.69: beta left its domain
    assert 0 < module.beta.item() < 0.5  # measured 0.056


def test_softplus_transform_round_trips_to_float_rounding() -> None:
    for dtype in (torch.float32, torch.float64):
        v = torch.logspace(-30, 4, 400, dtype=dtype)
        raw = positive_to_softplus_raw(v)
        back = softplus_to_positive(raw)
        # rounding raw ≈ log v costs |raw| ulps relative (measured max 31 eps at v = 3e-30)
        assert ((back - v).abs() / v <= 2 * (1 + raw.abs()) * torch.finfo(dtype).eps).all()
        assert ((back - v).abs() / v)[v >= 0.1].max() <= 4 * torch.finfo(dtype).eps
        assert softplus_to_positive(torch.tensor(-1e4, dtype=dtype)) > 0  # never underflows to 0


def test_assigning_a_constrained_parameter_validates_and_sets_the_raw_value() -> None:
    module = A.get("snake", a=torch.tensor([0.5, 1.5]))
    module.a = torch.tensor([2.0, 0.25])
    torch.testing.assert_close(module.a, torch.tensor([2.0, 0.25]))
    assert isinstance(module.raw_a, torch.nn.Parameter)
    with pytest.raises(ValueError, match="snake: parameter 'a' must be > 0"):
        module.a = torch.tensor([1.0, -1.0])
    with pytest.raises(ValueError, match="parameter 'a' has shape \\(2,\\), got a value of shape \\(3,\\)"):
        module.a = torch.ones(3)
    gate = A.get("sdm", q=3.0, d=0.6)  # a map with required parameters
    gate.d = torch.tensor(0.25)
    torch.testing.assert_close(gate.d, torch.tensor(0.25))
    with pytest.raises(ValueError, match="sdm: parameter 'd' must be in \\[0, 1\\]"):
        gate.d = torch.tensor(1.5)


def test_kernels_read_the_constrained_values() -> None:
    """bayesact.kernels reads parameters through tensor_params: it sees a, not raw_a."""
    from bayesact import kernels

    x = torch.randn(5, 3, dtype=torch.float64)
    trainable = A.get("snake", a=0.7).double()
    frozen = A.get("snake", a=0.7, trainable=False).double()
    k_trainable = kernels.nngp(x, activation=trainable, depth=1)
    torch.testing.assert_close(k_trainable, kernels.nngp(x, activation=frozen, depth=1), rtol=1e-6, atol=0)
    k_trainable.sum().backward()
    assert trainable.raw_a.grad is not None and torch.isfinite(trainable.raw_a.grad)
