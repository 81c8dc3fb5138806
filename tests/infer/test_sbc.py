"""Simulation-based calibration (Talts, Betancourt, Simpson, Vehtari & Gelman 2018).

Each run samples R independent replicates at once (a plate of replicates: the joint
posterior factorises, so every replicate's marginal is exact). For each replicate and test
quantity f the rank of f(θ̃) among L = 99 thinned posterior draws is uniform on {0..99} for
a correct sampler; a chi-square test on 5 equal bins must give p > 0.01. Per quantity a
correct sampler fails with probability 1%; with the seeds fixed the outcome is deterministic.
Test quantities include the log-likelihood of the simulated data (Modrák et al. 2023).
NUTS trees are capped at depth 4 and HMC runs 8 leapfrog steps to keep CI cheap (both
are still exact MCMC kernels). The slow variant uses R = 500 replicates and 10 bins.
"""

from __future__ import annotations

import numpy as np
import pytest
import torch
from scipy import stats

from bayesact.infer import mcmc

from .sbc_models import LOGIT_X, SCHOOL_SIGMA, eight_schools, logistic, normal_normal, simulate

L_DRAWS = 99
WARMUP, DRAWS = 100, 200  # per chain; 2 chains x 200 draws thinned by 4 to L = 99


def ranks(draws: torch.Tensor, truth: torch.Tensor) -> np.ndarray:
    """Rank of truth[r] among L thinned draws; ``draws`` is (chain, draw, R)."""
    chains, n = draws.shape[:2]
    thin = max(1, (chains * n) // (L_DRAWS + 1))
    kept = draws[:, ::thin].reshape(-1, draws.shape[-1])[:L_DRAWS]
    assert kept.shape[0] == L_DRAWS
    return (kept < truth).sum(0).numpy()


def chi2_p(r: np.ndarray, bins: int) -> float:
    counts = np.bincount(r * bins // (L_DRAWS + 1), minlength=bins)
    return float(stats.chisquare(counts).pvalue)


def normal_normal_quantities(samples, truth):
    y = truth["y"]

    def loglik(mu):
        return torch.distributions.Normal(mu[..., None], 1.0).log_prob(y).sum(-1)

    return {
        "mu": (samples["mu"], truth["mu"]),
        "loglik": (loglik(samples["mu"]), loglik(truth["mu"])),
    }


def eight_schools_quantities(samples, truth):
    def theta0(s):
        return s["mu"] + s["tau"] * s["theta_tilde"][..., 0]

    def loglik(s):
        theta = s["mu"][..., None] + s["tau"][..., None] * s["theta_tilde"]
        return torch.distributions.Normal(theta, SCHOOL_SIGMA).log_prob(truth["y"]).sum(-1)

    return {
        "mu": (samples["mu"], truth["mu"]),
        "tau": (samples["tau"], truth["tau"]),
        "theta0": (theta0(samples), theta0(truth)),
        "loglik": (loglik(samples), loglik(truth)),
    }


def logistic_quantities(samples, truth):
    def loglik(s):
        logits = s["beta"] @ LOGIT_X.T + s["alpha"][..., None]
        return torch.distributions.Bernoulli(logits=logits).log_prob(truth["y"]).sum(-1)

    return {
        "beta0": (samples["beta"][..., 0], truth["beta"][..., 0]),
        "alpha": (samples["alpha"], truth["alpha"]),
        "loglik": (loglik(samples), loglik(truth)),
    }


CASES = {
    "normal_normal": (normal_normal, normal_normal_quantities),
    "eight_schools": (eight_schools, eight_schools_quantities),
    "logistic": (logistic, logistic_quantities),
}


def run_sbc(name: str, method: str, reps: int, bins: int, seed: int, warmup: int = WARMUP,
            draws: int = DRAWS, depth: int = 4, hmc_steps: int | None = 8) -> dict[str, float]:
    model, quantities = CASES[name]
    truth = simulate(model, reps, seed)
    post = mcmc(model, reps, truth["y"], method=method, num_chains=2, num_warmup=warmup,
                num_samples=draws, seed=seed, progress=False, target_accept=0.9,
                max_tree_depth=depth, num_steps=hmc_steps if method == "hmc" else None)
    out = {}
    for q, (draws, true_value) in quantities(post.samples, truth).items():
        out[q] = chi2_p(ranks(draws, true_value), bins)
    return out


@pytest.mark.parametrize("method", ["nuts", "hmc"])
@pytest.mark.parametrize("name", list(CASES))
def test_sbc_ranks_are_uniform(name, method):
    pvalues = run_sbc(name, method, reps=100, bins=5, seed=2)
    assert min(pvalues.values()) > 0.01, pvalues


@pytest.mark.slow
@pytest.mark.parametrize("method", ["nuts", "hmc"])
@pytest.mark.parametrize("name", list(CASES))
def test_sbc_ranks_are_uniform_large(name, method):
    # 500 replicates make a 500x larger joint: the step size shrinks and mixing per draw
    # drops, so this variant warms up longer, keeps more draws and lets trees grow.
    pvalues = run_sbc(name, method, reps=500, bins=10, seed=7, warmup=500, draws=1000,
                      depth=7, hmc_steps=None)
    assert min(pvalues.values()) > 0.01, pvalues


def test_sbc_detects_a_miscalibrated_sampler():
    # The rank test has power: exact conjugate posterior draws pass, the same draws widened
    # 2x about their mean (an over-dispersed "sampler": a ∩-shaped histogram) fail.
    truth = simulate(normal_normal, 100, 3)
    n = truth["y"].shape[-1]
    mean = truth["y"].sum(-1) / (n + 1)  # N(Σy/(n+1), 1/(n+1)) per replicate
    gen = torch.Generator().manual_seed(0)
    draws = mean + (n + 1) ** -0.5 * torch.randn(1, 400, 100, generator=gen, dtype=mean.dtype)
    widened = mean + 2.0 * (draws - mean)
    assert chi2_p(ranks(draws, truth["mu"]), 5) > 0.01
    assert chi2_p(ranks(widened, truth["mu"]), 5) < 0.01
