"""Schedules that a "chains moved" test cannot check: Stan's warmup windows (exact lists derived by
hand from Stan's algorithm) and NUTS trajectory lengths against an independent recursive NUTS."""

from __future__ import annotations

import math

import numpy as np
import pytest
import torch

from bayesact.infer.adaptation import adaptation_windows
from bayesact.infer.hmc_core import make_metric, nuts_transition

DT = torch.float64


# -- Stan's windows ------------------------------------------------------------------------
# Stan (windowed_adaptation): init_buffer 75, term_buffer 50, first slow window 25; each next
# window doubles, and is stretched to the end of the slow phase (num_warmup - 50) when the
# window after it would pass that end (end + 2·size > num_warmup - 50). Below 150 iterations
# the buffers are 15% / 10% (truncated) and one window fills the 75% between them.
@pytest.mark.parametrize(
    ("num_warmup", "expected"),
    [
        # 200: window 25 ends at 100, the next (50) ends exactly at 150 = 200 - 50
        (200, [(75, 100), (100, 150)]),
        # 250: slow phase ends at 200; the 50-window would end at 150 and the 100 after it at 250 > 200
        (250, [(75, 100), (100, 200)]),
        # 700: 25, 50, 100, then the 200-window (250..450) is followed by 400 > 650: stretched
        (700, [(75, 100), (100, 150), (150, 250), (250, 650)]),
        (1000, [(75, 100), (100, 150), (150, 250), (250, 450), (450, 950)]),
        # 2000: 25, 50, 100, 200, 400 (ends 850), the 800-window ends 1650 and 1600 more passes 1950
        (2000, [(75, 100), (100, 150), (150, 250), (250, 450), (450, 850), (850, 1950)]),
        # 170: the first window is always 25 (Stan never stretches it); the next ends at 120
        (170, [(75, 100), (100, 120)]),
        # 150 = 75 + 25 + 50: the defaults fit exactly
        (150, [(75, 100)]),
        # short warmup: 15% / 75% / 10%
        (149, [(22, 135)]),  # int(22.35), int(14.9)
        (100, [(15, 90)]),
        (20, [(3, 18)]),
        (19, []),
    ],
)
def test_adaptation_windows_match_stans_schedule(num_warmup, expected):
    assert adaptation_windows(num_warmup) == expected


# -- NUTS trajectory lengths ---------------------------------------------------------------
def _leapfrog(z: np.ndarray, r: np.ndarray, eps: float) -> tuple[np.ndarray, np.ndarray]:
    """Velocity Verlet for U = |z|²/2 (∇U = z), unit mass."""
    r = r - 0.5 * eps * z
    z = z + eps * r
    return z, r - 0.5 * eps * z


def _turning(v_a: np.ndarray, v_b: np.ndarray, rho: np.ndarray) -> bool:
    return float(v_a @ rho) <= 0 or float(v_b @ rho) <= 0


def _build(z: np.ndarray, r: np.ndarray, eps: float, depth: int) -> tuple:
    """Recursive subtree of 2^depth leapfrog steps of signed size ``eps`` from (z, r), stopping at
    the first sub-subtree that U-turns. Returns (z, r at the far end, r at the near end, momentum
    sum, steps taken, stopped)."""
    if depth == 0:
        z, r = _leapfrog(z, r, eps)
        return z, r, r, r, 1, False
    z1, r_far1, r_near, rho1, n1, stop1 = _build(z, r, eps, depth - 1)
    if stop1:
        return z1, r_far1, r_near, rho1, n1, True
    z2, r_far2, _, rho2, n2, stop2 = _build(z1, r_far1, eps, depth - 1)
    if stop2:
        return z2, r_far2, r_near, rho2, n1 + n2, True
    rho = rho1 + rho2
    return z2, r_far2, r_near, rho, n1 + n2, _turning(r_near, r_far2, rho)


def _reference_steps(z0: np.ndarray, r0: np.ndarray, forward: np.ndarray, eps: float,
                     max_depth: int) -> tuple[int, int]:
    """Leapfrog steps and tree depth of one NUTS transition (Hoffman & Gelman 2014 tree doubling
    with Betancourt's generalised criterion on every subtree and on the whole trajectory)."""
    ends = {True: (z0, r0), False: (z0, r0)}
    rho, steps = r0.copy(), 0
    for depth in range(max_depth):
        fwd = bool(forward[depth])
        z, r = ends[fwd]
        z, r, _, rho_sub, n, stopped = _build(z, r, eps if fwd else -eps, depth)
        steps += n
        if stopped:
            return steps, depth + 1
        ends[fwd] = (z, r)
        rho = rho + rho_sub
        if _turning(ends[False][1], ends[True][1], rho):
            return steps, depth + 1
    return steps, max_depth


@pytest.mark.parametrize(("dim", "eps"), [(1, 0.25), (3, 0.4), (10, 0.3)])
def test_nuts_trajectory_lengths_match_a_recursive_reference(dim, eps):
    """Standard normal, unit mass, fixed ε, starting points drawn exactly from N(0, I): the
    number of leapfrog steps of a transition depends only on (z₀, r₀, directions), so the mean
    steps and depths of the iterative batched NUTS must match those of the recursive
    reference; tolerance 4 Monte Carlo standard errors of the difference."""
    n_ours, n_ref, max_depth = 4000, 3000, 8
    gen = torch.Generator().manual_seed(dim)
    z = torch.randn(n_ours, dim, generator=gen, dtype=DT)
    step = torch.full((n_ours,), eps, dtype=DT)
    metric = make_metric(torch.ones(n_ours, dim, dtype=DT))
    _, stats = nuts_transition(z, 0.5 * (z * z).sum(-1), z.clone(), step, metric,
                               lambda x: (0.5 * (x * x).sum(-1), x), gen, max_tree_depth=max_depth)
    assert not bool(stats.diverging.any())
    ours = stats.num_steps.double().numpy()
    ours_depth = stats.tree_depth.double().numpy()

    rng = np.random.default_rng(100 + dim)
    ref = np.array([
        _reference_steps(rng.standard_normal(dim), rng.standard_normal(dim), rng.random(max_depth) < 0.5,
                         eps, max_depth)
        for _ in range(n_ref)
    ], dtype=float)
    for a, b in ((ours, ref[:, 0]), (ours_depth, ref[:, 1])):
        se = math.sqrt(a.var() / a.size + b.var() / b.size)
        assert abs(a.mean() - b.mean()) < 4 * se + 1e-12, (a.mean(), b.mean(), se)
    # the reference itself: in 1-D a trajectory U-turns after about half a period (π / ε steps)
    if dim == 1:
        assert 0.25 * math.pi / eps < ref[:, 0].mean() < 2 * math.pi / eps
