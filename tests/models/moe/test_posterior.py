"""Posterior inference on GaussianMoE: bayesact NUTS with relabelling (R-hat, coverage), Pyro's NUTS, SVI."""

from __future__ import annotations

import arviz as az
import numpy as np
import pyro
import pytest
import torch
from pyro.infer import MCMC, NUTS, SVI, TraceEnum_ELBO
from pyro.infer.autoguide import AutoDelta

from bayesact.infer import mcmc, svi
from bayesact.models.moe import GaussianMoE, relabel, simulate_moe

TRUE2 = {
    "gate_weight": torch.tensor([[3.0], [0.0]], dtype=torch.float64),
    "gate_bias": torch.tensor([0.0, 0.0], dtype=torch.float64),
    "expert_weight": torch.tensor([[1.0], [-1.0]], dtype=torch.float64),
    "expert_bias": torch.tensor([1.5, -1.5], dtype=torch.float64),
    "noise_std": torch.tensor([0.3, 0.4], dtype=torch.float64),
}
TRUE3 = {
    "gate_weight": torch.tensor([[2.5], [-2.5], [0.0]], dtype=torch.float64),
    "gate_bias": torch.tensor([0.5, 0.0, 0.0], dtype=torch.float64),
    "expert_weight": torch.tensor([[1.0], [-1.0], [0.0]], dtype=torch.float64),
    "expert_bias": torch.tensor([2.0, -2.0, 0.0], dtype=torch.float64),
    "noise_std": torch.tensor([0.3, 0.5, 0.4], dtype=torch.float64),
}


def site_truth(true: dict[str, torch.Tensor]) -> dict[str, torch.Tensor]:
    """The true parameters as the model's sites (the last expert's gate pinned at 0)."""
    return {"gate.weight": (true["gate_weight"] - true["gate_weight"][-1])[:-1],
            "gate.bias": (true["gate_bias"] - true["gate_bias"][-1])[:-1],
            "expert.weight": true["expert_weight"], "expert.bias": true["expert_bias"],
            "noise_std": true["noise_std"]}


def check_nuts(true: dict[str, torch.Tensor], n: int, draws: int, rhat_bound: float, depth: int = 10
               ) -> dict[str, float]:
    x, y = simulate_moe(n, true, seed=1)
    k = true["noise_std"].shape[0]
    moe = GaussianMoE(1, k).double()
    post = mcmc(moe, x, y, num_chains=4, num_warmup=draws, num_samples=draws, seed=0, progress=False,
                max_tree_depth=depth)
    truth = site_truth(true)
    relabelled = relabel(post, {n: v for n, v in truth.items() if not n.startswith("gate.")})
    idata = relabelled.to_arviz()  # unrounded diagnostics (az.summary rounds to 2 decimals)
    rhat = max(float(v.max()) for v in az.rhat(idata).data_vars.values())
    ess = min(float(v.min()) for v in az.ess(idata, method="bulk").data_vars.values())
    assert rhat < rhat_bound
    assert ess > 100
    # coverage, jointly at 99% (Bonferroni over the m scalar quantities, normal approximation): every
    # |posterior mean - truth| <= z_{1 - 0.005/m} posterior sds
    m = sum(v.numel() for v in truth.values())
    z = float(torch.distributions.Normal(0.0, 1.0).icdf(torch.tensor(1 - 0.005 / m)))
    for name, value in truth.items():
        s = relabelled.samples[name].reshape(-1, *value.shape)
        assert bool(((s.mean(0) - value).abs() <= z * s.std(0)).all()), name
    return {"rhat": rhat, "ess": ess, "divergences": post.num_divergences}


def test_nuts_after_relabelling_converges_and_covers_the_truth() -> None:
    """CI version: 2 experts, n = 100, 4 chains x 100 draws at tree depth 5. Before relabelling the chains
    sit in different labellings (R-hat ~1.5 measured at n = 200); after it, R-hat < 1.05 for these short
    chains (measured 1.014, min bulk ESS 245, no divergences, 2026-12-02; an earlier sampler gave 1.01
    and 322)."""
    check_nuts(TRUE2, n=100, draws=100, rhat_bound=1.05, depth=5)


@pytest.mark.slow
def test_nuts_three_experts_rhat_below_1_01() -> None:
    """3 experts, n = 1,000, 4 chains x 500 draws: R-hat < 1.01 on every identified quantity (unrounded),
    truth covered (measured 2026-12-02: max R-hat 1.004, min bulk ESS 1721, no divergences, 53 s)."""
    check_nuts(TRUE3, n=1000, draws=500, rhat_bound=1.01)


@pytest.mark.filterwarnings("ignore:.*divergent transitions")  # a 20-step warmup: a run, not a posterior
def test_pyro_nuts_runs_the_marginalised_and_the_enumerated_model() -> None:
    """Pyro's own NUTS: the marginalised model, and the enumerated one with z summed out
    (max_plate_nesting=1)."""
    x, y = simulate_moe(60, TRUE2, seed=2)
    for moe in (GaussianMoE(1, 2).double(), GaussianMoE(1, 2, enumerate=True).double()):
        pyro.set_rng_seed(0)
        run = MCMC(NUTS(moe, max_plate_nesting=1, max_tree_depth=4), num_samples=20, warmup_steps=20,
                   disable_progbar=True)
        run.run(x, y)
        samples = run.get_samples()
        assert set(samples) == set(moe.site_names)
        assert samples["noise_std"].shape == (20, 2) and bool(torch.isfinite(samples["noise_std"]).all())
    post = mcmc(GaussianMoE(1, 2).double(), x, y, engine="pyro", num_chains=1, num_warmup=20, num_samples=20,
                seed=0, progress=False, max_tree_depth=4)
    assert post.samples["expert.bias"].shape == (1, 20, 2)


def test_svi_recovers_the_experts() -> None:
    """bayesact.infer.svi (mean-field normal guide) and Pyro's SVI on the enumerated model (TraceEnum_ELBO,
    MAP guide over the continuous sites) both place the expert intercepts within 0.3 of the truth."""
    x, y = simulate_moe(400, TRUE2, seed=3)
    moe = GaussianMoE(1, 2).double()
    torch.manual_seed(0)
    moe.fit(x, y, num_restarts=2, seed=0)  # a good initial point for the guide: the MLE
    init = {k: v.clone() for k, v in moe.point_values().items()}
    fit = svi(moe, x, y, num_steps=400, lr=0.05, seed=0, progress=False,
              guide=pyro.infer.autoguide.AutoNormal(moe, init_loc_fn=pyro.infer.autoguide.init_to_value(
                  values=init)))
    draws = fit.sample_posterior(200, seed=0)
    intercepts = np.sort(draws["expert.bias"].mean(0).numpy())
    assert np.allclose(intercepts, [-1.5, 1.5], atol=0.3)

    pyro.clear_param_store()
    pyro.set_rng_seed(0)
    enum = GaussianMoE(1, 2, enumerate=True).double()
    guide = AutoDelta(pyro.poutine.block(enum, hide=["z"]), init_loc_fn=pyro.infer.autoguide.init_to_value(
        values=init))
    opt = SVI(enum, guide, pyro.optim.Adam({"lr": 0.02}), TraceEnum_ELBO(max_plate_nesting=1))
    losses = [opt.step(x, y) for _ in range(150)]
    assert np.isfinite(losses).all()
    est = guide.median()
    assert np.allclose(np.sort(est["expert.bias"].detach().numpy()), [-1.5, 1.5], atol=0.3)


def test_enumerated_top1_gate_under_trace_enum_elbo() -> None:
    """The enumerated variant with a top-1 gate (exact zeros, discontinuous: the HMC-unsuitable case):
    TraceEnum_ELBO with a MAP guide takes finite steps, and its loss stays within 1e-6 of the marginalised
    model's -log p(y, θ) (a zero-weight expert enters z's log-probability clamped at float eps, not -inf)."""
    x, y = simulate_moe(200, TRUE2, seed=4)
    enum = GaussianMoE(1, 2, gate="topk", gate_kwargs={"k": 1}, enumerate=True).double()
    marg = GaussianMoE(1, 2, gate="topk", gate_kwargs={"k": 1}).double()
    pyro.clear_param_store()
    pyro.set_rng_seed(0)
    guide = AutoDelta(pyro.poutine.block(enum, hide=["z"]))
    elbo = TraceEnum_ELBO(max_plate_nesting=1)
    opt = SVI(enum, guide, pyro.optim.Adam({"lr": 0.05}), elbo)
    losses = [opt.step(x, y) for _ in range(50)]
    assert np.isfinite(losses).all() and losses[-1] < losses[0]
    values = {k: v.detach() for k, v in guide.median().items()}
    log_prior = sum(float(marg.prior(n, torch.float64).log_prob(v)) for n, v in values.items())
    direct = -(float(marg.log_likelihood(x, y, values).sum()) + log_prior)
    assert elbo.loss(enum, guide, x, y) == pytest.approx(direct, abs=1e-6)
