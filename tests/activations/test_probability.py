"""Probability maps: on the simplex, closed forms, limits, Jacobians, invariances, bad input."""

from __future__ import annotations

import math

import numpy as np
import pytest
import torch
from hypothesis import given, settings
from hypothesis import strategies as st
from torch.autograd import gradcheck

from bayesact import activations as A

MAPS = {  # each map called with some parameters and a given dim
    "softmax": lambda x, dim: A.softmax(x, temperature=0.7, dim=dim),
    "sparsemax": lambda x, dim: A.sparsemax(x, dim=dim),
    "stablemax": lambda x, dim: A.stablemax(x, dim=dim),
    "sdm": lambda x, dim: A.sdm(x, q=3.0, d=0.6, dim=dim),
    "topk_softmax": lambda x, dim: A.topk_softmax(x, k=2, dim=dim),
}


@settings(max_examples=30, deadline=None)
@given(
    shape=st.lists(st.integers(2, 6), min_size=1, max_size=3),
    dim_seed=st.integers(0, 10),
    scale=st.floats(0.1, 50.0),
    seed=st.integers(0, 2**16),
)
@pytest.mark.parametrize("name", sorted(MAPS))
def test_outputs_lie_on_the_simplex(name: str, shape: list[int], dim_seed: int, scale: float,
                                    seed: int) -> None:
    gen = torch.Generator().manual_seed(seed)
    x = torch.randn(*shape, generator=gen, dtype=torch.float64) * scale
    dim = dim_seed % len(shape) - len(shape) * (dim_seed % 2)  # positive and negative dims
    p = MAPS[name](x, dim)
    assert p.shape == x.shape and p.dtype == x.dtype
    assert (p >= 0).all()
    torch.testing.assert_close(p.sum(dim), torch.ones_like(p.sum(dim)), rtol=0, atol=1e-12)


def test_softmax_temperature_limits_and_translation_invariance() -> None:
    x = torch.tensor([[0.3, 2.0, -1.0, 1.9]], dtype=torch.float64)
    torch.testing.assert_close(A.softmax(x + 5.0), A.softmax(x))
    torch.testing.assert_close(A.softmax(x, temperature=1e-4), torch.tensor([[0.0, 1.0, 0.0, 0.0]],
                                                                             dtype=torch.float64))
    torch.testing.assert_close(A.softmax(x, temperature=1e9), torch.full_like(x, 0.25))
    torch.testing.assert_close(A.softmax(x, temperature=2.0), torch.softmax(x / 2, -1))


def _sparsemax_by_bisection(z: np.ndarray) -> np.ndarray:
    """Independent reference: find tau with sum(max(z - tau, 0)) = 1 by bisection."""
    lo, hi = z.min() - 1.0, z.max()
    for _ in range(200):
        mid = (lo + hi) / 2
        lo, hi = (mid, hi) if np.maximum(z - mid, 0).sum() > 1 else (lo, mid)
    return np.maximum(z - (lo + hi) / 2, 0)


def test_sparsemax_matches_an_independent_projection() -> None:
    rng = np.random.default_rng(0)
    for _ in range(50):
        z = rng.normal(scale=rng.uniform(0.1, 3), size=int(rng.integers(2, 12)))
        got = A.sparsemax(torch.from_numpy(z)).numpy()
        np.testing.assert_allclose(got, _sparsemax_by_bisection(z), atol=1e-12)


def test_sparsemax_two_dimensional_closed_form_and_invariance() -> None:
    z = torch.randn(200, 2, dtype=torch.float64) * 2
    p1 = torch.clamp((z[:, 0] - z[:, 1] + 1) / 2, 0, 1)
    torch.testing.assert_close(A.sparsemax(z)[:, 0], p1)
    torch.testing.assert_close(A.sparsemax(z + 3.3), A.sparsemax(z))
    torch.testing.assert_close(A.sparsemax(z, temperature=0.5), A.sparsemax(2 * z))


def test_sparsemax_of_well_separated_logits_is_one_hot() -> None:
    x = torch.tensor([[0.0, 5.0, 1.0, -2.0], [9.0, 0.0, 7.5, 1.0]])
    torch.testing.assert_close(A.sparsemax(x), torch.tensor([[0.0, 1, 0, 0], [1.0, 0, 0, 0]]))


def test_sparsemax_jacobian() -> None:
    z = torch.tensor([[0.9, 0.7, -0.3, 0.5, -2.0]], dtype=torch.float64, requires_grad=True)
    assert gradcheck(A.sparsemax, (z,), eps=1e-6, atol=1e-8)
    p = A.sparsemax(z).detach()
    support = (p > 0).double()[0]
    expected = torch.diag(support) - torch.outer(support, support) / support.sum()
    jac = torch.autograd.functional.jacobian(lambda t: A.sparsemax(t)[0], z)[:, 0, :]
    torch.testing.assert_close(jac, expected)
    # along another dim, with a temperature that requires grad
    tau = torch.tensor(0.8, dtype=torch.float64, requires_grad=True)
    zz = torch.randn(5, 3, dtype=torch.float64, requires_grad=True)
    assert gradcheck(lambda a, t: A.sparsemax(a, dim=0, temperature=t), (zz, tau), eps=1e-6, atol=1e-8)


def test_stablemax_is_c1_at_zero_and_not_translation_invariant() -> None:
    x = torch.tensor([-1e-7, 0.0, 1e-7], dtype=torch.float64, requires_grad=True)
    # s(x) = x + 1 and 1 / (1 - x) agree to first order at 0: value 1, slope 1 from both sides
    s = torch.where(x >= 0, x + 1, 1 / (1 - x))
    torch.testing.assert_close(s.detach(), torch.tensor([1 - 1e-7, 1.0, 1 + 1e-7], dtype=torch.float64))
    z = torch.tensor([[0.5, -0.3, 1.2]], dtype=torch.float64, requires_grad=True)
    assert gradcheck(A.stablemax, (z,), eps=1e-6, atol=1e-8)
    near_zero = torch.tensor([[1e-9, -1e-9, 0.2]], dtype=torch.float64, requires_grad=True)
    assert gradcheck(A.stablemax, (near_zero,), eps=1e-10, atol=1e-6)
    assert not torch.allclose(A.stablemax(z + 2.0), A.stablemax(z))
    expected = torch.tensor([1.5, 1 / 1.3, 2.2], dtype=torch.float64)
    torch.testing.assert_close(A.stablemax(z)[0].detach(), expected / expected.sum())


def test_sdm_special_cases() -> None:
    x = torch.randn(4, 6, dtype=torch.float64)
    torch.testing.assert_close(A.sdm(x, q=math.e - 2, d=1.0), torch.softmax(x, -1))
    torch.testing.assert_close(A.sdm(x, q=math.exp(2) - 2, d=0.5), torch.softmax(x, -1))
    torch.testing.assert_close(A.sdm(x, q=5.0, d=0.0), torch.full_like(x, 1 / 6))
    q = torch.tensor([[0.0], [1.0], [2.0], [3.0]], dtype=torch.float64)  # per-row similarity counts
    torch.testing.assert_close(A.sdm(x, q=q, d=0.5), torch.softmax(x * 0.5 * torch.log(2 + q), -1))


def test_topk_softmax() -> None:
    x = torch.tensor([[0.1, 2.0, -1.0, 1.5, 0.3]], dtype=torch.float64)
    torch.testing.assert_close(A.topk_softmax(x, k=5), torch.softmax(x, -1))
    torch.testing.assert_close(A.topk_softmax(x, k=1), torch.tensor([[0.0, 1, 0, 0, 0]], dtype=torch.float64))
    p = A.topk_softmax(x, k=2)
    top = torch.softmax(torch.tensor([2.0, 1.5], dtype=torch.float64), -1)
    torch.testing.assert_close(p[0, [1, 3]], top)
    assert (p[0, [0, 2, 4]] == 0).all()


@pytest.mark.parametrize(
    ("call", "message"),
    [
        (lambda x: A.softmax(x, temperature=-1.0), "'temperature' must be > 0"),
        (lambda x: A.softmax(x, temperature=0.0), "'temperature' must be > 0"),
        (lambda x: A.sparsemax(x, temperature=-2.0), "'temperature' must be > 0"),
        (lambda x: A.sdm(x, q=-1.0, d=0.5), "'q' must be >= 0"),
        (lambda x: A.sdm(x, q=float("inf"), d=0.5), "'q' must be finite"),
        (lambda x: A.sdm(x, q=1.0, d=1.5), "'d' must be in \\[0, 1\\]"),
        (lambda x: A.topk_softmax(x, k=0), "'k' must be an int >= 1"),
        (lambda x: A.topk_softmax(x, k=5), "'k' must be an int in \\[1, 4\\]"),
    ],
)
def test_bad_input(call, message: str) -> None:
    with pytest.raises(ValueError, match=message):
        call(torch.randn(3, 4))


def test_non_tensor_input_is_a_type_error() -> None:
    with pytest.raises(TypeError, match="softmax: argument 'x' must be a torch.Tensor"):
        A.softmax([1.0, 2.0])  # type: ignore[arg-type]


# ----------------------------------------------------------------------------- issue 11 regressions
def _sparsemax_float64_reference(x: torch.Tensor, temperature: float = 1.0) -> np.ndarray:
    """Bisection on the float64 logits after the (exact) shift by their maximum."""
    z = x.double().numpy()
    return _sparsemax_by_bisection((z - z.max()) / temperature)


@pytest.mark.parametrize(
    ("x", "temperature"),
    [
        (torch.tensor([2e7, 2e7 - 0.5, 1.0, -3e7]), 1.0),  # 1 + 2e7 rounds to 2e7 in float32
        (torch.tensor([0.3, 2.5, 2.4, -0.4]), 1e-7),  # x / τ = 2.5e7, where 1 + 2.5e7 rounds to 2.5e7
        (torch.tensor([1e17, 1e17 - 0.75e0, 5.0], dtype=torch.float64), 1.0),  # ulp(1e17) = 16
        (torch.tensor([1e17, 1e17, -1e17], dtype=torch.float64), 1.0),  # a tie at the top
        (torch.tensor([3e38, 1e38, 0.0]), 1e-3),  # x / τ overflows float32 unless shifted first
    ],
)
def test_sparsemax_of_large_finite_inputs(x: torch.Tensor, temperature: float) -> None:
    """Before the fix every case raised "index -1 is out of bounds" (an empty support, k = 0)."""
    x = x.clone().requires_grad_(True)
    p = A.sparsemax(x, temperature=temperature)
    want = _sparsemax_float64_reference(x.detach(), temperature)
    atol = 1e-6 if x.dtype == torch.float32 else 1e-12
    np.testing.assert_allclose(p.detach().double().numpy(), want, atol=atol)
    assert p.detach()[x.detach().argmax()] > 0  # the largest entry is always in the support
    p[0].backward()
    assert torch.isfinite(x.grad).all()


def test_softmax_and_topk_of_large_finite_inputs_and_tiny_temperatures() -> None:
    x = torch.tensor([[3e38, 1e38, 0.0]])
    torch.testing.assert_close(A.softmax(x, temperature=1e-3), torch.tensor([[1.0, 0.0, 0.0]]))
    torch.testing.assert_close(A.topk_softmax(x, 2, temperature=1e-3), torch.tensor([[1.0, 0.0, 0.0]]))
    y = torch.tensor([0.3, 1.2, 1.2 - 1e-6, -0.4], dtype=torch.float64)
    top = 1 / (1 + math.exp(-1))  # the two largest logits are 1e-6 = one temperature apart
    want = torch.tensor([0.0, top, 1 - top, 0.0], dtype=torch.float64)
    torch.testing.assert_close(A.softmax(y, temperature=1e-6), want, rtol=1e-8, atol=1e-12)


TEMPERED = {
    "softmax": lambda x, t: A.softmax(x, temperature=t),
    "sparsemax": lambda x, t: A.sparsemax(x, temperature=t),
    "topk_softmax": lambda x, t: A.topk_softmax(x, 2, temperature=t),
}


@pytest.mark.parametrize("name", sorted(TEMPERED))
@pytest.mark.parametrize(
    ("temperature", "message"),
    [
        (float("nan"), "must be finite"),
        (float("inf"), "must be finite"),
        (torch.tensor(float("nan")), "must be finite"),  # gave NaN probabilities before
        (torch.tensor([[1.0], [float("inf")], [1.0]]), "must be finite"),
        (0.0, "must be > 0"),
        (-1.5, "must be > 0"),
        (torch.tensor([[1.0], [-1.0], [2.0]]), "must be > 0"),
    ],
)
def test_temperature_must_be_finite_and_positive(name: str, temperature, message: str) -> None:
    with pytest.raises(ValueError, match=f"{name}: parameter 'temperature' {message}"):
        TEMPERED[name](torch.randn(3, 4), temperature)
    with pytest.raises(ValueError, match=f"{name}: parameter 'temperature' {message}"):
        A.get(name, temperature=temperature, **({"k": 2} if name == "topk_softmax" else {}))


def test_per_row_tensor_temperature_broadcasts() -> None:
    x = torch.randn(3, 5, dtype=torch.float64)
    t = torch.tensor([[0.5], [1.0], [2.0]], dtype=torch.float64)
    torch.testing.assert_close(A.softmax(x, temperature=t), torch.softmax(x / t, -1))
    torch.testing.assert_close(A.sparsemax(x, temperature=t)[1], A.sparsemax(x[1]))


@pytest.mark.parametrize("name", sorted(MAPS))
def test_one_calling_convention(name: str) -> None:
    """x, then the map's required arguments, then keyword-only dim (and temperature)."""
    import inspect

    params = list(inspect.signature(getattr(A, name)).parameters.values())
    required = {"topk_softmax": ["k"], "sdm": ["q", "d"]}.get(name, [])
    assert [p.name for p in params if p.kind is p.POSITIONAL_OR_KEYWORD] == ["x", *required]
    assert all(p.default is p.empty for p in params if p.kind is p.POSITIONAL_OR_KEYWORD)
    keyword = {p.name: p.default for p in params if p.kind is p.KEYWORD_ONLY}
    assert keyword == ({"dim": -1} if name in ("stablemax", "sdm") else {"dim": -1, "temperature": 1.0})
    with pytest.raises(TypeError, match="positional argument"):  # the old orders no longer work
        getattr(A, name)(torch.randn(2, 3), *required, 0, 1.0)


def test_positional_and_keyword_required_arguments() -> None:
    x = torch.randn(2, 5, dtype=torch.float64)
    torch.testing.assert_close(A.topk_softmax(x, 2), A.topk_softmax(x, k=2))
    torch.testing.assert_close(A.sdm(x, 3.0, 0.6), A.sdm(x, q=3.0, d=0.6))
    with pytest.raises(TypeError, match="multiple values for argument 'k'"):
        A.topk_softmax(x, 2, k=2)
    with pytest.raises(TypeError, match="topk_softmax\\(\\) missing required parameter\\(s\\) 'k'"):
        A.topk_softmax(x)
    with pytest.raises(TypeError, match="'dim' must be an int"):
        A.softmax(x, dim=1.0)
    with pytest.raises(ValueError, match="sparsemax: 'dim' must be in \\[-2, 1\\]"):
        A.sparsemax(x, dim=2)


@pytest.mark.parametrize("name", sorted(MAPS))
def test_maps_are_reachable_through_the_registry(name: str) -> None:
    assert A.names("probability_map") == sorted(MAPS)
    assert name not in A.names() and name in A.names(None)
    info = A.info(name)
    assert info.kind == "probability_map" and not info.elementwise
    assert info.formula and info.paper and info.options["dim"] == -1
    params = MAP_PARAMS_FOR_GET[name]
    module = A.get(name, **params)
    x = torch.randn(3, 6, dtype=torch.float64)
    torch.testing.assert_close(module.double()(x), getattr(A, name)(x, **params))
    frozen = A.get(name, trainable=False, dim=0, **params)
    torch.testing.assert_close(frozen(x.float()), getattr(A, name)(x.float(), dim=0, **params))


MAP_PARAMS_FOR_GET = {"softmax": {"temperature": 0.7}, "sparsemax": {"temperature": 0.5}, "stablemax": {},
                      "topk_softmax": {"k": 2}, "sdm": {"q": 3.0, "d": 0.6}}


def test_registry_info_and_modules_for_required_arguments() -> None:
    assert A.info("topk_softmax").options == {"k": None, "dim": -1}
    assert A.info("topk_softmax").smoothness == "discontinuous" and not A.info("topk_softmax").hmc_safe
    assert A.info("sdm").params == {"q": None, "d": None}
    assert A.info("sdm", q=1.0, d=0.5).params == {"q": 1.0, "d": 0.5}
    with pytest.raises(TypeError, match="missing required parameter\\(s\\) 'k'"):
        A.get("topk_softmax")
    with pytest.raises(ValueError, match="'k' must be an int >= 1"):
        A.get("topk_softmax", k=0)
    with pytest.raises(ValueError, match="'k' must be an int in \\[1, 4\\]"):
        A.get("topk_softmax", k=5)(torch.randn(2, 4))
    module = A.get("sparsemax", temperature=0.5)
    assert {k for k, _ in module.named_parameters()} == {"raw_temperature"}
    torch.testing.assert_close(module.temperature, torch.tensor(0.5))
