"""Unit tests of the pure HMC/NUTS core and the warmup adaptation (float64, exact targets)."""

from __future__ import annotations

import math

import numpy as np
import pytest
import torch
from scipy import stats

from bayesact.infer.adaptation import (
    adaptation_windows,
    dual_averaging_init,
    dual_averaging_update,
    welford_covariance,
    welford_init,
    welford_update,
)
from bayesact.infer.hmc_core import (
    IntegratorState,
    find_reasonable_step_size,
    hmc_transition,
    kinetic_energy,
    leapfrog,
    make_metric,
    nuts_transition,
    subtree_checkpoints,
)

DT = torch.float64


def gaussian(cov: torch.Tensor):
    """Potential and gradient of N(0, cov), batched over rows."""
    prec = torch.linalg.inv(cov)

    def value_and_grad(z: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor]:
        g = z @ prec
        return 0.5 * (z * g).sum(-1), g

    return value_and_grad


def energy_error(step: float, metric, vg, z0, r0, total_time: float = 1.0) -> float:
    u, g = vg(z0)
    state = IntegratorState(z0, r0, u, g)
    h0 = u + kinetic_energy(metric, r0)
    eps = torch.full((z0.shape[0], 1), step, dtype=DT)
    for _ in range(round(total_time / step)):
        state = leapfrog(state, eps, metric, vg)
    h1 = state.potential + kinetic_energy(metric, state.r)
    return float((h1 - h0).abs().max())


def test_leapfrog_energy_error_is_second_order():
    # The global energy error of velocity Verlet over a fixed time is O(ε²): halving ε
    # divides it by about 4 (Leimkuhler & Reich 2004). Tolerance [3, 5] covers the O(ε⁴) term.
    cov = torch.tensor([[1.0, 0.6], [0.6, 2.0]], dtype=DT)
    vg = gaussian(cov)
    metric = make_metric(torch.ones(1, 2, dtype=DT))
    z0 = torch.tensor([[1.0, -0.5]], dtype=DT)
    r0 = torch.tensor([[0.3, 0.8]], dtype=DT)
    e1 = energy_error(0.1, metric, vg, z0, r0)
    e2 = energy_error(0.05, metric, vg, z0, r0)
    assert 3.0 < e1 / e2 < 5.0


def test_leapfrog_is_reversible_and_zero_step_is_identity():
    cov = torch.tensor([[1.0, 0.3], [0.3, 0.5]], dtype=DT)
    vg = gaussian(cov)
    metric = make_metric(torch.tensor([[0.7, 1.3], [1.0, 1.0]], dtype=DT))
    z0 = torch.randn(2, 2, dtype=DT)
    r0 = torch.randn(2, 2, dtype=DT)
    u, g = vg(z0)
    state = IntegratorState(z0, r0, u, g)
    eps = torch.tensor([[0.2], [0.0]], dtype=DT)
    for _ in range(7):
        state = leapfrog(state, eps, metric, vg)
    assert torch.equal(state.z[1], z0[1]) and torch.equal(state.r[1], r0[1])
    state = IntegratorState(state.z, -state.r, state.potential, state.grad)
    for _ in range(7):
        state = leapfrog(state, eps, metric, vg)
    torch.testing.assert_close(state.z, z0, atol=1e-12, rtol=0)
    torch.testing.assert_close(-state.r, r0, atol=1e-12, rtol=0)


def test_dense_metric_momentum_has_covariance_mass_matrix():
    # r ~ N(0, M) with M = Σ⁻¹: the sample covariance of r matches inv(Σ) within 5%.
    sigma = torch.tensor([[2.0, 0.9], [0.9, 1.0]], dtype=DT)
    metric = make_metric(sigma.expand(20000, 2, 2))
    gen = torch.Generator().manual_seed(1)
    from bayesact.infer.hmc_core import sample_momentum

    r = sample_momentum(metric, gen)
    emp = torch.cov(r.T)
    torch.testing.assert_close(emp, torch.linalg.inv(sigma), rtol=0.05, atol=0.02)


def brute_force_slots(leaf: int) -> list[int]:
    """Slots of the first leaves of the sub-subtrees an odd leaf closes (by definition)."""
    trailing = 0
    while leaf >> trailing & 1:
        trailing += 1
    starts = [leaf - (1 << k) + 1 for k in range(1, trailing + 1)]
    return sorted(bin(m).count("1") for m in starts)


def test_subtree_checkpoint_slots_match_definition_and_are_never_clobbered():
    slots: dict[int, int] = {}  # slot -> leaf stored there
    for leaf in range(1 << 10):
        lo, hi = subtree_checkpoints(leaf)
        if leaf % 2 == 0:
            assert lo == hi == bin(leaf).count("1")
            slots[hi] = leaf
        else:
            assert list(range(lo, hi + 1)) == brute_force_slots(leaf)
            trailing = hi - lo + 1
            for k in range(1, trailing + 1):
                start = leaf - (1 << k) + 1
                assert slots[bin(start).count("1")] == start  # not overwritten meanwhile
        assert hi < 10


def test_adaptation_windows_follow_stan():
    assert adaptation_windows(1000) == [(75, 100), (100, 150), (150, 250), (250, 450), (450, 950)]
    assert adaptation_windows(100) == [(15, 90)]  # 15% / 75% / 10%
    assert adaptation_windows(19) == []
    for n in (20, 150, 151, 500, 2000):
        w = adaptation_windows(n)
        assert all(a < b for a, b in w) and all(w[i][1] == w[i + 1][0] for i in range(len(w) - 1))


def test_dual_averaging_finds_the_target_step_size():
    # Acceptance exp(-ε²) hits δ = 0.8 at ε* = sqrt(-log 0.8); the averaged iterate converges.
    state = dual_averaging_init(torch.tensor([1.0, 0.01], dtype=DT))
    for _ in range(2000):
        eps = state.log_step.exp()
        state = dual_averaging_update(state, torch.exp(-(eps**2)), 0.8)
    target = math.sqrt(-math.log(0.8))
    expected = torch.full((2,), target, dtype=DT)
    torch.testing.assert_close(state.log_step_avg.exp(), expected, rtol=0.02, atol=0)


def test_welford_matches_numpy_moments():
    x = torch.randn(50, 3, 4, dtype=DT)
    diag = welford_init(3, 4, False, x)
    dense = welford_init(3, 4, True, x)
    for row in x:
        diag = welford_update(diag, row)
        dense = welford_update(dense, row)
    for c in range(3):
        ref = np.cov(x[:, c].numpy(), rowvar=False)
        np.testing.assert_allclose(welford_covariance(dense, False)[c].numpy(), ref, rtol=1e-10)
        np.testing.assert_allclose(welford_covariance(diag, False)[c].numpy(), np.diag(ref), rtol=1e-10)
    reg = welford_covariance(diag)
    raw = welford_covariance(diag, False).numpy()
    np.testing.assert_allclose(reg.numpy(), (50 / 55) * raw + 1e-3 * 5 / 55)


def test_find_reasonable_step_size_brackets_target():
    # For a standard normal the one-step acceptance falls with ε; the heuristic stops near
    # the crossing of 0.8 (within a factor 2 either way, its resolution).
    vg = gaussian(torch.eye(5, dtype=DT))
    z = torch.randn(64, 5, dtype=DT)
    u, g = vg(z)
    metric = make_metric(torch.ones(64, 5, dtype=DT))
    eps = find_reasonable_step_size(z, u, g, torch.full((64,), 1e-3, dtype=DT), metric, vg,
                                    torch.Generator().manual_seed(0))
    assert bool(((eps > 0.05) & (eps < 8.0)).all())


@pytest.mark.parametrize("method", ["nuts", "hmc"])
@pytest.mark.parametrize("dense", [False, True])
def test_transition_leaves_the_target_invariant(method, dense):
    # Stationarity, the defining property of an MCMC kernel: start 4000 independent chains at
    # exact draws of a correlated 3-D Gaussian, apply 3 transitions with a deliberately rough
    # step size and metric; every coordinate and the squared Mahalanobis distance must still
    # follow their exact laws (KS tests, p > 1e-3 each: false alarm ≈ 0.4% per case).
    torch.manual_seed(0)
    cov = torch.tensor([[1.0, 0.8, 0.0], [0.8, 1.0, 0.3], [0.0, 0.3, 4.0]], dtype=DT)
    chol = torch.linalg.cholesky(cov)
    n = 4000
    vg = gaussian(cov)
    z = torch.randn(n, 3, dtype=DT) @ chol.T
    u, g = vg(z)
    inv_mass = torch.tensor([1.5, 0.5, 2.0], dtype=DT)
    inv_mass = torch.diag(inv_mass) + 0.1 if dense else inv_mass
    metric = make_metric(inv_mass.expand(n, *inv_mass.shape).clone())
    gen = torch.Generator().manual_seed(3)
    step = torch.full((n,), 0.7, dtype=DT)
    total_steps = 0
    for _ in range(3):
        if method == "nuts":
            (z, u, g), st = nuts_transition(z, u, g, step, metric, vg, gen, max_tree_depth=6)
        else:
            steps = torch.full((n,), 5, dtype=torch.long)
            (z, u, g), st = hmc_transition(z, u, g, step, metric, vg, gen, num_steps=steps)
        total_steps += int(st.num_steps.sum())
    assert total_steps > 3 * n  # chains actually moved along trajectories
    sd = cov.diagonal().sqrt()
    for k in range(3):
        assert stats.kstest(z[:, k].numpy() / sd[k].item(), "norm").pvalue > 1e-3
    maha = (z @ torch.linalg.inv(cov) * z).sum(-1)
    assert stats.kstest(maha.numpy(), "chi2", args=(3,)).pvalue > 1e-3
    torch.testing.assert_close(u, vg(z)[0])


def test_nuts_stats_are_consistent():
    vg = gaussian(torch.eye(4, dtype=DT))
    n = 256
    z = torch.randn(n, 4, dtype=DT)
    u, g = vg(z)
    metric = make_metric(torch.ones(n, 4, dtype=DT))
    gen = torch.Generator().manual_seed(0)
    _, st = nuts_transition(z, u, g, torch.full((n,), 0.3, dtype=DT), metric, vg, gen, max_tree_depth=3)
    # depth d means at most 2^d - 1 leapfrog steps, and at least 2^(d-1)
    assert bool((st.num_steps <= 2**st.tree_depth - 1).all())
    assert bool((st.num_steps >= 2 ** (st.tree_depth - 1)).all())
    assert bool(st.reached_max_treedepth.any())  # ε = 0.3 cannot U-turn within 7 steps
    assert bool(((st.acceptance_rate > 0) & (st.acceptance_rate <= 1)).all())
    assert not bool(st.diverging.any())


def test_nuts_flags_divergences():
    # A potential that explodes away from the origin: large steps must be reported divergent.
    def vg(z):
        return (z**4).sum(-1) * 1e3, 4e3 * z**3

    z = torch.ones(8, 2, dtype=DT)
    u, g = vg(z)
    metric = make_metric(torch.ones(8, 2, dtype=DT))
    (z2, _, _), st = nuts_transition(z, u, g, torch.full((8,), 0.5, dtype=DT), metric, vg,
                                     torch.Generator().manual_seed(0))
    assert bool(st.diverging.all())
    assert torch.equal(z2, z)  # the divergent subtree is never used
