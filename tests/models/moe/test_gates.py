"""Unit tests of the mixture-of-experts gates (issue 15): simplex, sparsity, closed forms, symmetries."""

from __future__ import annotations

import math
from typing import Any

import pytest
import torch
from torch.func import functional_call

from bayesact.models.moe.gates import (
    GATES,
    ActivationGate,
    DSelectKGate,
    Gate,
    SoftmaxGate,
    SparsemaxGate,
    StableMaxGate,
    TemperatureGate,
    TopKGate,
    gate_options,
    make_gate,
    smooth_step,
)

D, K = 3, 5
CASES: list[tuple[str, dict[str, Any]]] = [
    ("softmax", {}),
    ("temperature", {"temperature": 0.7}),
    ("activation", {"activation": "tanh"}),
    ("activation", {"activation": "sigmoid"}),
    ("activation", {"activation": "gelu"}),
    ("topk", {"k": 2}),
    ("dselect_k", {"k": 2}),
    ("sparsemax", {}),
    ("stablemax", {}),
]


def _gate(name: str, options: dict[str, Any], *, dtype: torch.dtype = torch.float64, seed: int = 0,
          num_experts: int = K) -> Gate:
    torch.manual_seed(seed)
    gate = make_gate(name, D, num_experts, options).to(dtype)
    with torch.no_grad():  # spread the parameters so that sparse gates have exact zeros
        for p in gate.parameters():
            p.add_(torch.randn_like(p))
    return gate


@pytest.mark.parametrize("dtype", [torch.float32, torch.float64])
@pytest.mark.parametrize(("name", "options"), CASES)
def test_every_gate_returns_points_on_the_simplex(
    name: str, options: dict[str, Any], dtype: torch.dtype
) -> None:
    gate = _gate(name, options, dtype=dtype)
    x = torch.randn(4, 6, D, dtype=dtype)
    p = gate(x)
    assert p.shape == (4, 6, K) and p.dtype == dtype
    assert bool((p >= 0).all())
    total = p.sum(-1)
    tol = 1e-5 if dtype == torch.float32 else 1e-12
    if name == "dselect_k":  # K = 5 is not a power of 2: mass may leak to unreachable codes
        assert bool((total <= 1 + tol).all())
    else:
        torch.testing.assert_close(total, torch.ones_like(total), atol=tol, rtol=0)
    log_p = gate.log_prob(x)
    torch.testing.assert_close(torch.exp(log_p), p, atol=tol, rtol=0)
    assert bool(torch.isneginf(log_p).eq(p == 0).all())  # -inf exactly at the exact zeros


def test_float32_parameters_with_float64_input_give_float64() -> None:
    for name, options in CASES:
        gate = make_gate(name, D, K, options)
        assert gate(torch.randn(2, D, dtype=torch.float64)).dtype == torch.float64


def test_dselect_k_sums_to_one_for_a_power_of_two() -> None:
    gate = _gate("dselect_k", {"k": 3}, num_experts=8)
    p = gate(torch.randn(50, D, dtype=torch.float64))
    torch.testing.assert_close(p.sum(-1), torch.ones(50, dtype=torch.float64), atol=1e-12, rtol=0)


def _saturated_dselect(num_experts: int, k: int, codes: list[int], gamma: float = 1.0) -> DSelectKGate:
    """Constant selectors, selector l saturated (|z| = γ) on the binary code codes[l]."""
    gate = DSelectKGate(D, num_experts, k=k, gamma=gamma, per_example=False).double()
    bits = gate.num_bits
    with torch.no_grad():
        for sel, code in enumerate(codes):
            for j in range(bits):
                gate.z_bias[sel, j] = gamma if (code >> j) & 1 else -gamma
    return gate


def test_dselect_k_penalty_zero_and_sum_one_when_no_mass_is_unreachable() -> None:
    x = torch.randn(7, D, dtype=torch.float64)
    good = _saturated_dselect(5, 2, [1, 4])  # codes < 5: reachable
    p = good(x)
    torch.testing.assert_close(p.sum(-1), torch.ones(7, dtype=torch.float64), atol=1e-12, rtol=0)
    assert float(good.regularization(x).detach()) == 0.0
    assert bool(((p > 0).sum(-1) <= 2).all()) and bool((p[:, [1, 4]] > 0).all())
    bad = _saturated_dselect(5, 2, [1, 6])  # code 6 is unreachable: its selector's mass is lost
    pb = bad(x)
    weights = torch.softmax(bad.w_bias, -1)
    torch.testing.assert_close(pb.sum(-1), weights[0].expand(7), atol=1e-12, rtol=0)
    # penalty Σ_l (1/reachable_l - 1): a selector with no reachable mass gives 1/eps - 1 (finite), and
    # its gradient is 0, not NaN (before the floor: inf value, NaN gradient)
    penalty = bad.regularization(x)
    eps = torch.finfo(torch.float64).eps
    torch.testing.assert_close(penalty.detach(), torch.tensor(1 / eps - 1, dtype=torch.float64))
    grads = torch.autograd.grad(penalty, [bad.z_bias, bad.w_bias], allow_unused=True)
    assert all(g is None or bool(torch.isfinite(g).all()) for g in grads)
    half = _saturated_dselect(5, 1, [6])
    with torch.no_grad():
        half.z_bias[0, 1] = 0.0  # bit 1 undecided: codes 4 (reachable) and 6 (not) get 1/2 each
    # 1/(1/2) - 1 = 1, plus entropy_weight (1e-6) times the selector's entropy ln 2
    expected = torch.tensor(1.0 + 1e-6 * math.log(2), dtype=torch.float64)
    torch.testing.assert_close(half.regularization(x).detach(), expected, atol=1e-15, rtol=0)


def test_dselect_k_at_most_k_nonzeros_once_every_selector_logit_is_saturated() -> None:
    torch.manual_seed(1)
    gamma = 0.5
    gate = DSelectKGate(D, 8, k=3, gamma=gamma).double()
    with torch.no_grad():
        gate.z_weight.normal_(0, 3.0)
    x = torch.randn(400, D, dtype=torch.float64)
    z, _ = gate.selector_logits(x)
    saturated = (z.abs() >= gamma / 2).flatten(-2).all(-1)
    assert int(saturated.sum()) > 20
    p = gate(x)
    assert bool(((p[saturated] > 0).sum(-1) <= 3).all())
    # gradients reach z only inside the transition region
    z_leaf = z.detach().requires_grad_(True)
    smooth_step(z_leaf, gamma).sum().backward()
    assert z_leaf.grad is not None
    inside = z.abs() < gamma / 2
    assert bool((z_leaf.grad[~inside] == 0).all()) and bool((z_leaf.grad[inside] != 0).all())


@pytest.mark.parametrize("gamma", [1.0, 0.3])
def test_smooth_step_is_c1_with_zero_slopes_at_the_ends_and_not_c2(gamma: float) -> None:
    half = gamma / 2
    eps = 1e-7
    t = torch.tensor([-half - eps, -half, -half + eps, half - eps, half, half + eps],
                     dtype=torch.float64, requires_grad=True)
    s = smooth_step(t, gamma)
    torch.testing.assert_close(s.detach(), torch.tensor([0, 0, 0, 1, 1, 1], dtype=torch.float64),
                               atol=1e-12, rtol=0)
    (slope,) = torch.autograd.grad(s.sum(), t, create_graph=True)
    assert bool((slope.detach()[[0, 5]] == 0).all())  # exactly flat beyond ±γ/2
    assert float(slope.detach()[[1, 4]].abs().max()) < 1e-12  # S'(±γ/2) = 0 up to rounding
    # just inside, S'(±(γ/2 - ε)) = 6ε/γ² + O(ε²): the slope is continuous at the ends
    inside = torch.full((2,), 6 * eps / gamma**2, dtype=torch.float64)
    torch.testing.assert_close(slope.detach()[[2, 3]], inside, rtol=1e-6, atol=0)
    # S(0) = 1/2, S'(0) = 3/(2γ); the second derivative jumps from ∓6/γ² to 0 at ±γ/2 (C1, not C2)
    t0 = torch.zeros(1, dtype=torch.float64, requires_grad=True)
    (d0,) = torch.autograd.grad(smooth_step(t0, gamma).sum(), t0)
    assert float(smooth_step(t0, gamma)) == 0.5 and math.isclose(float(d0), 1.5 / gamma, rel_tol=1e-12)
    (curv,) = torch.autograd.grad(slope.sum(), t)
    inner = torch.tensor([curv[2], curv[3]])
    torch.testing.assert_close(inner, torch.tensor([6 / gamma**2, -6 / gamma**2], dtype=torch.float64),
                               rtol=1e-5, atol=0)
    assert float(curv[0]) == 0 and float(curv[5]) == 0


def test_topk_with_k_equal_to_num_experts_is_the_dense_softmax() -> None:
    dense = _gate("softmax", {})
    top = TopKGate(D, K, k=K).double()
    top.load_state_dict(dense.state_dict())
    x = torch.randn(30, D, dtype=torch.float64)
    torch.testing.assert_close(top(x), dense(x), atol=1e-15, rtol=0)
    torch.testing.assert_close(top.log_prob(x), dense.log_prob(x), atol=1e-13, rtol=0)


@pytest.mark.parametrize("k", [1, 2, 4])
def test_topk_has_exactly_k_nonzeros_and_k1_is_a_partition(k: int) -> None:
    gate = _gate("topk", {"k": k})
    x = torch.randn(200, D, dtype=torch.float64)
    p = gate(x)
    assert bool(((p > 0).sum(-1) == k).all())
    logits = gate.logits(x)
    top = torch.topk(logits, k, dim=-1).indices
    assert bool(torch.gather(p, -1, top).gt(0).all())
    # the non-zeros are the softmax of the top-k logits
    ref = torch.softmax(torch.gather(logits, -1, top), -1)
    torch.testing.assert_close(torch.gather(p, -1, top), ref, atol=1e-14, rtol=0)
    if k == 1:  # a hard partition of the input space by argmax of the logits
        assert bool(((p == 0) | (p == 1)).all())
        torch.testing.assert_close(p, torch.nn.functional.one_hot(logits.argmax(-1), K).double())


def test_sparsemax_gate_two_experts_closed_form() -> None:
    gate = SparsemaxGate(1, 2, temperature=0.5).double()
    with torch.no_grad():
        gate.weight.copy_(torch.tensor([[1.0], [-0.5]]))
        gate.bias.copy_(torch.tensor([0.2, 0.1]))
    x = torch.linspace(-2, 2, 81, dtype=torch.float64)[:, None]
    z = gate.logits(x) / gate.temperature.detach()
    p1 = torch.clamp((1 + z[:, 0] - z[:, 1]) / 2, 0, 1)  # the 2-D projection onto the simplex
    p = gate(x)
    torch.testing.assert_close(p, torch.stack([p1, 1 - p1], -1), atol=1e-14, rtol=0)
    assert bool((p == 0).any()) and bool(((p > 0) & (p < 1)).any())


def test_sparsemax_gate_jacobian_closed_form_matches_autograd() -> None:
    gate = _gate("sparsemax", {"temperature": 3.0})
    x = torch.randn(D, dtype=torch.float64)
    params = {k: v.detach() for k, v in gate.named_parameters()}
    p = gate(x).detach()
    assert bool((p == 0).any()) and int((p > 0).sum()) >= 2

    def of_bias(b: torch.Tensor) -> torch.Tensor:
        return functional_call(gate, {**params, "bias": b}, (x,))

    jac = torch.autograd.functional.jacobian(of_bias, params["bias"])
    s = (p > 0).double()
    tau = gate.temperature.detach()
    closed = (torch.diag(s) - torch.outer(s, s) / s.sum()) / tau  # dπ/dβ_0 = J_sparsemax(z/τ) / τ
    torch.testing.assert_close(jac, closed, atol=1e-14, rtol=0)


def test_stablemax_gate_is_c1_across_zero_logits() -> None:
    gate = StableMaxGate(1, 2).double()
    with torch.no_grad():
        gate.weight.zero_()
        gate.bias.zero_()

    def pi(b0: float) -> torch.Tensor:
        b = torch.tensor([b0, 0.0], dtype=torch.float64, requires_grad=True)
        p = functional_call(gate, {"weight": gate.weight.detach(), "bias": b}, (torch.zeros(1, 1).double(),))
        (g,) = torch.autograd.grad(p[0, 0], b)
        return torch.cat([p[0, :1].detach(), g[:1]])

    left, right = pi(-1e-8), pi(1e-8)
    torch.testing.assert_close(left, right, atol=1e-7, rtol=0)  # value and slope continuous at 0
    # d/db [s(b)/(s(b)+1)] at 0 = s'(0)/(2)^2 with s'(0) = 1 from both sides
    torch.testing.assert_close(pi(0.0)[1], torch.tensor(0.25, dtype=torch.float64), atol=1e-15, rtol=0)
    # the second derivative jumps (s'' = 0 on the right, 2/(1-t)^3 = 2 on the left): C1 only
    b = torch.tensor([0.0, 0.0], dtype=torch.float64)
    second = []
    for sign in (-1.0, 1.0):
        bb = (b + torch.tensor([sign * 1e-6, 0.0], dtype=torch.float64)).requires_grad_(True)
        p = functional_call(gate, {"weight": gate.weight.detach(), "bias": bb}, (torch.zeros(1, 1).double(),))
        (g,) = torch.autograd.grad(p[0, 0], bb, create_graph=True)
        (h,) = torch.autograd.grad(g[0], bb)
        second.append(float(h[0]))
    assert abs(second[0] - second[1]) > 0.1


def _shift(gate: Gate, c: torch.Tensor, c0: float) -> None:
    with torch.no_grad():
        gate.weight.add_(c)
        gate.bias.add_(c0)


@pytest.mark.parametrize(("name", "options"), [
    ("softmax", {}), ("temperature", {}), ("sparsemax", {}), ("topk", {"k": 2}),
    ("activation", {"activation": "identity"}),
])
def test_translation_invariance_holds_for_softmax_like_gates(name: str, options: dict[str, Any]) -> None:
    gate = _gate(name, options)
    assert gate.translation_invariant
    x = torch.randn(40, D, dtype=torch.float64)
    before, ident = gate(x), gate.identifiable_parameters()
    _shift(gate, torch.randn(D, dtype=torch.float64), 1.7)
    torch.testing.assert_close(gate(x), before, atol=1e-13, rtol=0)
    for key, value in gate.identifiable_parameters().items():
        torch.testing.assert_close(value, ident[key], atol=1e-13, rtol=0)


@pytest.mark.parametrize(("name", "options"), [("stablemax", {}), ("activation", {"activation": "tanh"})])
def test_translation_invariance_fails_for_stablemax_and_nonlinear_activation(
    name: str, options: dict[str, Any]
) -> None:
    gate = _gate(name, options)
    assert not gate.translation_invariant
    x = torch.randn(40, D, dtype=torch.float64)
    before = gate(x)
    _shift(gate, torch.zeros(D, dtype=torch.float64), 1.7)
    assert float((gate(x) - before).abs().max()) > 1e-3
    with pytest.raises(ValueError, match="pinned"):
        make_gate(name, D, K, {**options, "pinned": True})


@pytest.mark.parametrize("name", ["softmax", "temperature", "sparsemax", "topk"])
def test_pinned_gate_fixes_the_last_expert_at_zero(name: str) -> None:
    options = {"k": 3} if name == "topk" else {}
    free = _gate(name, options)
    pinned = make_gate(name, D, K, {**options, "pinned": True}).double()
    assert pinned.weight.shape == (K - 1, D) and pinned.bias.shape == (K - 1,)
    assert pinned.full_weight.shape == (K, D) and float(pinned.full_weight[-1].abs().sum()) == 0
    state = {k: v for k, v in free.state_dict().items() if k not in ("weight", "bias")}
    pinned.load_state_dict({**state, "weight": (free.weight[:-1] - free.weight[-1]).detach(),
                            "bias": (free.bias[:-1] - free.bias[-1]).detach()})
    x = torch.randn(30, D, dtype=torch.float64)
    torch.testing.assert_close(pinned(x), free(x), atol=1e-13, rtol=0)
    for key, value in pinned.identifiable_parameters().items():
        torch.testing.assert_close(value, free.identifiable_parameters()[key], atol=1e-13, rtol=0)


def test_temperature_scale_symmetry_and_identifiable_ratio() -> None:
    gate = _gate("temperature", {"temperature": 0.6})
    x = torch.randn(25, D, dtype=torch.float64)
    before, ident = gate(x), gate.identifiable_parameters()
    c = 3.5
    with torch.no_grad():
        gate.weight.mul_(c)
        gate.bias.mul_(c)
    gate.set_temperature(float(gate.temperature) * c)
    torch.testing.assert_close(gate(x), before, atol=1e-12, rtol=0)
    for key, value in gate.identifiable_parameters().items():
        torch.testing.assert_close(value, ident[key], atol=1e-12, rtol=0)


def test_scheduled_temperature_is_a_buffer_and_small_tau_gives_argmax_routing() -> None:
    gate = TemperatureGate(D, K, temperature=1.0, learn_temperature=False).double()
    assert "raw_temperature" not in dict(gate.named_parameters())
    assert "raw_temperature" in dict(gate.named_buffers())
    x = torch.randn(20, D, dtype=torch.float64)
    gate.set_temperature(1e-4)
    torch.testing.assert_close(gate(x), torch.nn.functional.one_hot(gate.logits(x).argmax(-1), K).double(),
                               atol=1e-6, rtol=0)
    gate.set_temperature(1e6)
    torch.testing.assert_close(gate(x), torch.full((20, K), 1 / K, dtype=torch.float64), atol=1e-5, rtol=0)
    learned = TemperatureGate(D, K, temperature=0.3)
    assert "raw_temperature" in dict(learned.named_parameters())
    assert math.isclose(float(learned.temperature), 0.3, rel_tol=1e-6)


def test_activation_gate_with_identity_equals_temperature_gate() -> None:
    temp = _gate("temperature", {"temperature": 0.4})
    act = ActivationGate(D, K, activation="identity", temperature=0.4).double()
    act.load_state_dict(temp.state_dict())
    x = torch.randn(30, D, dtype=torch.float64)
    torch.testing.assert_close(act(x), temp(x), atol=1e-15, rtol=0)
    torch.testing.assert_close(act.log_prob(x), temp.log_prob(x), atol=1e-15, rtol=0)


@pytest.mark.parametrize("activation", ["tanh", "sigmoid", "gelu"])
def test_activation_gate_applies_the_registry_activation(activation: str) -> None:
    gate = ActivationGate(D, K, activation=activation, temperature=0.5).double()
    x = torch.randn(10, D, dtype=torch.float64)
    fn = {"tanh": torch.tanh, "sigmoid": torch.sigmoid, "gelu": torch.nn.functional.gelu}[activation]
    expected = torch.softmax(fn(gate.logits(x)) / gate.temperature.detach(), -1)
    torch.testing.assert_close(gate(x), expected, atol=1e-14, rtol=0)
    assert "temperature" in gate.identifiable_parameters()


def test_softmax_gate_matches_closed_form() -> None:
    gate = SoftmaxGate(D, K).double()
    x = torch.randn(10, D, dtype=torch.float64)
    z = x @ gate.weight.detach().T + gate.bias.detach()
    torch.testing.assert_close(gate(x), torch.exp(z) / torch.exp(z).sum(-1, keepdim=True), atol=1e-15, rtol=0)


@pytest.mark.parametrize(("name", "options"), [("topk", {"k": 2}), ("sparsemax", {"temperature": 0.5}),
                                               ("dselect_k", {"k": 2}), ("topk", {"k": 1})])
def test_gradients_finite_with_exact_zeros_gradcheck(name: str, options: dict[str, Any]) -> None:
    """The Gaussian-mixture log-likelihood through log π and through π has exact, NaN-free gradients."""
    gate = _gate(name, options, num_experts=4 if name == "dselect_k" else K, seed=3)
    if isinstance(gate, DSelectKGate):
        with torch.no_grad():
            gate.z_weight.normal_(0, 2.0)
    x = torch.randn(12, D, dtype=torch.float64)
    y = torch.randn(12, dtype=torch.float64)
    assert bool((gate(x) == 0).any())
    keys = [k for k, _ in gate.named_parameters()]
    init = tuple(p.detach().clone().requires_grad_(True) for _, p in gate.named_parameters())
    means = torch.linspace(-1, 1, gate.num_experts, dtype=torch.float64)

    def loglik(*values: torch.Tensor) -> torch.Tensor:
        params = dict(zip(keys, values, strict=True))
        logn = -0.5 * (y[:, None] - means) ** 2 - 0.5 * math.log(2 * math.pi)
        pi = functional_call(gate, params, (x,))
        via_log = torch.logsumexp(_log_prob(gate, params, x) + logn, -1).sum()
        via_pi = torch.log((pi * torch.exp(logn)).sum(-1)).sum()
        responsibilities = torch.softmax(_log_prob(gate, params, x) + logn, -1)
        return via_log + via_pi + (responsibilities * logn).sum()

    out = loglik(*init)
    grads = torch.autograd.grad(out, init)
    assert all(bool(torch.isfinite(g).all()) for g in grads)
    assert torch.autograd.gradcheck(loglik, init, eps=1e-7, atol=1e-6)


def _log_prob(gate: Gate, params: dict[str, torch.Tensor], x: torch.Tensor) -> torch.Tensor:
    class _LogProb(torch.nn.Module):
        def __init__(self) -> None:
            super().__init__()
            self.gate = gate

        def forward(self, x: torch.Tensor) -> torch.Tensor:
            return self.gate.log_prob(x)

    return functional_call(_LogProb(), {f"gate.{k}": v for k, v in params.items()}, (x,))


@pytest.mark.parametrize(
    ("call", "match"),
    [
        (lambda: SoftmaxGate(D, 1), "num_experts"),
        (lambda: TopKGate(D, 4, k=5), "'k'"),
        (lambda: TopKGate(D, 4, k=0), "'k'"),
        (lambda: DSelectKGate(D, 4, k=5), "'k'"),
        (lambda: DSelectKGate(D, 4, k=2, gamma=0.0), "gamma"),
        (lambda: make_gate("noisy_topk", D, 4), "unknown gate"),
        (lambda: ActivationGate(D, 4, activation="glu"), "elementwise"),
        (lambda: ActivationGate(D, 4, activation="softmax"), "elementwise"),
        (lambda: ActivationGate(D, 4, activation="not_an_activation"), "unknown activation"),
        (lambda: TemperatureGate(D, 4, temperature=-1.0), "temperature"),
        (lambda: StableMaxGate(D, 4, pinned=True), "pinned"),
        (lambda: SoftmaxGate(0, 4), "in_dim"),
    ],
)
def test_bad_input_raises_value_error(call: Any, match: str) -> None:
    with pytest.raises(ValueError, match=match):
        call()


def test_make_gate_options_are_checked_and_typed() -> None:
    expected = {"softmax", "temperature", "activation", "topk", "dselect_k", "sparsemax", "stablemax"}
    assert set(GATES) == expected
    assert gate_options("topk") == {"k": gate_options("topk")["k"], "pinned": False}
    with pytest.raises(TypeError, match="unexpected 'temperature'"):
        make_gate("softmax", D, K, {"temperature": 2.0})
    with pytest.raises(TypeError, match="needs option"):
        make_gate("topk", D, K)
    with pytest.raises(TypeError, match="num_experts"):
        SoftmaxGate(D, 2.5)  # type: ignore[arg-type]
    with pytest.raises(ValueError, match="x"):
        SoftmaxGate(D, K)(torch.randn(4, D + 1))
    gate = make_gate("activation", D, K, {"activation": "gelu", "temperature": 0.5})
    assert isinstance(gate, ActivationGate) and math.isclose(float(gate.temperature), 0.5, rel_tol=1e-6)
