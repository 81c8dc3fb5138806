"""DSelect-k recovery: a fitted DSelect-k gate selects the true experts (Hazimeh et al., NeurIPS 2021).

The truth is a GaussianMoE with K = 3 linear experts (not a power of 2: 2 selector bits, code 3 is
unreachable) whose DSelect-2 gate has constant, saturated selectors on codes 0 and 2, so expert 1 is never
used: π* = (softmax(w*)_0, 0, softmax(w*)_1) = (0.599, 0, 0.401). n = 2000 draws, float64, seeded.

Monte Carlo tolerances (n = 2000): about 1200 rows come from expert 0 (σ = 0.3) and 800 from expert 2
(σ = 0.5), so the MLE of a, b has sd ≈ 0.009 and 0.018, of σ ≈ 0.006 and 0.013, and the mixing weight
sd ≈ √(0.24/2000) = 0.011. The bounds below (0.06 for a, b, σ; 0.04 for π) are > 3 sd for each.
"""

from __future__ import annotations

import pytest
import torch
from torch import Tensor

from bayesact.models import GaussianMoE, simulate_moe
from bayesact.models.moe.gates import DSelectKGate

K = 3
k = 2
SEEDS = range(8)  # fit seeds (restart draws); each fit takes ~0.2 s
A_TRUE = torch.tensor([1.0, 5.0, -1.0], dtype=torch.float64)
B_TRUE = torch.tensor([2.0, 0.0, -2.0], dtype=torch.float64)
SIGMA_TRUE = torch.tensor([0.3, 0.3, 0.5], dtype=torch.float64)
USED = (0, 2)  # the true selectors sit on codes 0 and 2; expert 1 is never selected
PARAM_TOL = 0.06
PI_TOL = 0.04
LEAKED_SEED = 8  # a fit seed whose selectors end mostly on the unreachable code 3


def _truth() -> GaussianMoE:
    true = GaussianMoE(1, K, gate="dselect", gate_kwargs={"k": k, "per_example": False}).double()
    values = true.point_values()
    # bit j of code i is (i >> j) & 1; z = ±2 saturates S (γ = 1): selector 0 -> code 0, selector 1 -> code 2
    values["gate.z_bias"] = torch.tensor([[-2.0, -2.0], [-2.0, 2.0]], dtype=torch.float64)
    values["gate.w_bias"] = torch.tensor([0.4, 0.0], dtype=torch.float64)
    values["expert.weight"] = A_TRUE[:, None].clone()
    values["expert.bias"] = B_TRUE.clone()
    values["noise_std"] = SIGMA_TRUE.clone()
    true.set_point_values(values)
    return true


@pytest.fixture(scope="module")
def data() -> tuple[GaussianMoE, Tensor, Tensor]:
    true = _truth()
    x, y = simulate_moe(2000, true, seed=1)
    return true, x, y


def _fit(x: Tensor, y: Tensor, seed: int, entropy_weight: float = 1e-2) -> GaussianMoE:
    with torch.random.fork_rng():  # the gate's initial values come from the global generator
        torch.manual_seed(seed)
        moe = GaussianMoE(
            1, K, gate="dselect", gate_kwargs={"k": k, "per_example": False, "entropy_weight": entropy_weight}
        ).double()
    moe.fit(x, y, num_restarts=3, seed=seed)
    return moe


def _refine_with_penalty(moe: GaussianMoE, x: Tensor, y: Tensor, weight: float) -> None:
    """Continue the MLE with ``weight`` × the gate's regulariser (unreachable-code penalty + entropy) added,
    as in the authors' training loss; L-BFGS on the gate parameters, the experts and log σ, in place."""
    gate = moe.gate
    assert isinstance(gate, DSelectKGate)
    start = moe.point_values()
    a = start["expert.weight"].clone().requires_grad_(True)
    b = start["expert.bias"].clone().requires_grad_(True)
    log_sigma = start["noise_std"].log().clone().requires_grad_(True)
    x0 = torch.zeros(1, 1, dtype=torch.float64)  # constant selectors: the gate does not depend on x

    def values() -> dict[str, Tensor]:
        return {"gate.z_bias": gate.z_bias, "gate.w_bias": gate.w_bias, "expert.weight": a,
                "expert.bias": b, "noise_std": log_sigma.exp()}

    params = [gate.z_bias, gate.w_bias, a, b, log_sigma]
    opt = torch.optim.LBFGS(params, max_iter=500, line_search_fn="strong_wolfe", tolerance_grad=1e-10,
                            tolerance_change=1e-12)

    def closure() -> Tensor:
        opt.zero_grad()
        loss = -moe.log_likelihood(x, y, values()).mean() + weight * gate.regularization(x0)
        loss.backward()
        return loss

    opt.step(closure)
    with torch.no_grad():
        moe.set_point_values({name: v.detach() for name, v in values().items()})


def _raw_gate(moe: GaussianMoE) -> Tensor:
    """The gate's own output π (K,) (before GaussianMoE renormalises it; sums to < 1 if mass leaks)."""
    with torch.no_grad():
        return moe.gate(torch.zeros(1, 1, dtype=torch.float64))[0]


def _check_selects_truth(moe: GaussianMoE, x: Tensor) -> dict[str, float]:
    """Assert the effective gate is nonzero exactly on fitted experts that match the true used experts;
    return the largest errors."""
    values = moe.point_values()
    a, b, sigma = values["expert.weight"][:, 0], values["expert.bias"], values["noise_std"]
    pi = moe.predict(x[:1]).mixture_distribution.probs[0]  # renormalised, as in the likelihood
    selected = torch.nonzero(pi > 0).flatten().tolist()
    assert len(selected) <= k
    true_pi = torch.softmax(torch.tensor([0.4, 0.0], dtype=torch.float64), 0)
    errors = {"a": 0.0, "b": 0.0, "sigma": 0.0, "pi": 0.0}
    matched = []
    for j, pj in zip(USED, true_pi, strict=True):
        i = int(torch.argmin((a - A_TRUE[j]) ** 2 + (b - B_TRUE[j]) ** 2))  # nearest fitted expert
        matched.append(i)
        assert i in selected, f"true expert {j} (fitted {i}) not selected: π = {pi.tolist()}"
        errors["a"] = max(errors["a"], abs(float(a[i] - A_TRUE[j])))
        errors["b"] = max(errors["b"], abs(float(b[i] - B_TRUE[j])))
        errors["sigma"] = max(errors["sigma"], abs(float(sigma[i] - SIGMA_TRUE[j])))
        errors["pi"] = max(errors["pi"], abs(float(pi[i] - pj)))
    assert sorted(matched) == sorted(selected)  # two distinct fitted experts, and nothing else selected
    unused = ({0, 1, 2} - set(matched)).pop()
    assert float(pi[unused]) == 0.0  # exactly: the leftover expert is switched off, not merely small
    assert errors["a"] < PARAM_TOL and errors["b"] < PARAM_TOL and errors["sigma"] < PARAM_TOL
    assert errors["pi"] < PI_TOL
    return errors


def test_fitted_dselect_k_selects_the_true_experts(data: tuple[GaussianMoE, Tensor, Tensor]) -> None:
    """Measured over the 8 fit seeds (all reach the same MLE): errors a 0.016, b 0.020, σ 0.004,
    π 0.0004; the unused expert gets π = 0 exactly every time."""
    _, x, y = data
    for seed in SEEDS:
        _check_selects_truth(_fit(x, y, seed), x)


def test_unreachable_code_penalty_moves_leaked_selectors_back_to_valid_codes(
    data: tuple[GaussianMoE, Tensor, Tensor],
) -> None:
    """``GaussianMoE.fit`` maximises the likelihood of the renormalised gate only, so a selector can keep
    mass on the unreachable code 3 (fit seed 8: the raw gate sums to 0.084; 7 of fit seeds 0-15 end below
    0.55). Continuing the fit with the gate's regulariser added (the penalty Σ_l (1/Σ_{i<K} r_i − 1) plus
    10⁻² × selector entropy, weight 1) moves every selector that still has reachable mass (measured
    reach 0.035-0.86 before) to valid codes (reach 1) at the same likelihood; when no selector is lost,
    every smooth-step saturates (|z| >= γ/2), the raw gate sums to 1, has at most k non-zeros and selects
    the true experts. Without the regulariser (weight 0) the same refinement leaves the leak in place.

    Limitation (asserted, so a change shows up): a selector whose mass is entirely on code 3 (every bit
    saturated; fit seed 0) has zero gradient, and the penalty cannot bring it back: it stays where it is.
    """
    _, x, y = data
    x0 = torch.zeros(1, 1, dtype=torch.float64)

    control = _fit(x, y, seed=LEAKED_SEED)
    assert float(_raw_gate(control).sum()) < 0.2  # measured 0.084: mass on the unreachable code
    _refine_with_penalty(control, x, y, weight=0.0)
    assert float(_raw_gate(control).sum()) < 0.2  # the likelihood alone does not see the leak

    partial = lost = 0
    for seed in range(10):
        moe = _fit(x, y, seed)
        gate = moe.gate
        assert isinstance(gate, DSelectKGate)
        with torch.no_grad():
            reach_before = gate.selectors(x0)[0][0, :, :K].sum(-1)
        z_before = gate.z_bias.detach().clone()
        ll_before = float(moe.log_likelihood(x, y).mean())
        _refine_with_penalty(moe, x, y, weight=1.0)
        with torch.no_grad():
            reach_after = gate.selectors(x0)[0][0, :, :K].sum(-1)
        dead = reach_before == 0
        partial += int(((reach_before > 0) & (reach_before < 0.99)).any())
        lost += int(dead.any())
        assert torch.allclose(reach_after[~dead], torch.ones_like(reach_after[~dead]), atol=1e-12, rtol=0)
        assert torch.equal(gate.z_bias.detach()[dead], z_before[dead])  # the limitation: no gradient
        assert float(moe.log_likelihood(x, y).mean()) == pytest.approx(ll_before, abs=1e-6)
        if not bool(dead.any()):
            raw = _raw_gate(moe)
            assert float(raw.sum()) == pytest.approx(1.0, abs=1e-12)
            assert bool((gate.z_bias.detach().abs() >= gate.gamma / 2).all())  # every smooth-step saturated
            assert int((raw > 0).sum()) <= k
            _check_selects_truth(moe, x)
    assert partial >= 3 and lost >= 1  # measured 5 partially leaked (seeds 1, 3, 7, 8, 9), 1 lost (seed 0)


@pytest.mark.xfail(strict=True,
                   reason="bug: fit's random starts add N(0, 1) to the selector logits, so most start "
                          "saturated (|z| >= γ/2, zero gradient) and stay at the starting routing; with fit "
                          "seed 11 all 3 restarts end at the one-expert fit (mean log-lik -2.229 vs -1.068)")
def test_fit_is_not_stuck_at_saturated_dselect_starts(data: tuple[GaussianMoE, Tensor, Tensor]) -> None:
    true, x, y = data
    moe = _fit(x, y, seed=11)
    with torch.no_grad():
        ll_true = float(true.log_likelihood(x, y).mean())
    assert float(moe.log_likelihood(x, y).mean()) > ll_true - 0.01


@pytest.mark.xfail(strict=True, raises=ValueError,
                   reason="bug: a DSelect-k start with every selector on an unreachable code makes "
                          "GaussianMoE._components divide 0 by 0 (model.py, renormalisation) and fit raises "
                          "instead of discarding that restart")
def test_fit_survives_a_restart_whose_selector_starts_on_an_unreachable_code() -> None:
    """k = 1, K = 3: a random start with both selector bits >= γ/2 puts all mass on code 3, π = 0."""
    gen = torch.Generator().manual_seed(0)
    x = torch.randn(5, 1, generator=gen, dtype=torch.float64)
    y = torch.randn(5, generator=gen, dtype=torch.float64)
    moe = GaussianMoE(1, K, gate="dselect", gate_kwargs={"k": 1, "per_example": False}).double()
    moe.set_point_values({**moe.point_values(), "gate.z_bias": torch.zeros(1, 2, dtype=torch.float64)})
    fit = moe.fit(x, y, num_restarts=1, seed=4)  # seed 4's start lands on code 3
    assert torch.isfinite(torch.tensor(fit.log_likelihood))
