"""The BNN model: sites, forward pass, likelihoods, prior function draws, Pyro inference, bad input."""

from __future__ import annotations

import math

import pyro
import pyro.distributions as dist
import pytest
import torch
from pyro.infer import MCMC, NUTS, SVI, Predictive, Trace_ELBO
from pyro.infer.autoguide import AutoNormal

from bayesact import infer, kernels
from bayesact.models import BNN
from bayesact.priors import GaussianPrior, HierarchicalPrior


def _manual_forward(bnn: BNN, trace: pyro.poutine.Trace, x: torch.Tensor) -> torch.Tensor:
    h = x
    for layer in range(bnn.num_layers):
        w = trace.nodes[f"layers.{layer}.weight"]["value"]
        b = trace.nodes[f"layers.{layer}.bias"]["value"]
        h = h @ w / math.sqrt(w.shape[0]) + b
        if layer < bnn.num_layers - 1:
            h = torch.tanh(h)
    return h


def test_sites_shapes_and_forward_pass() -> None:
    bnn = BNN(3, hidden=(7, 5), out_dim=2)
    x, y = torch.randn(11, 3), torch.randn(11, 2)
    trace = pyro.poutine.trace(bnn).get_trace(x, y)
    shapes = {k: tuple(v["value"].shape) for k, v in trace.nodes.items() if v["type"] == "sample"}
    assert shapes["layers.0.weight"] == (3, 7) and shapes["layers.1.weight"] == (7, 5)
    assert shapes["layers.2.weight"] == (5, 2) and shapes["layers.2.bias"] == (2,)
    assert shapes["obs"] == (11, 2) and shapes["noise_std"] == ()
    torch.testing.assert_close(trace.nodes["f"]["value"], _manual_forward(bnn, trace, x))


@pytest.mark.parametrize("likelihood", ["gaussian", "student_t", "bernoulli", "categorical"])
def test_likelihood_log_density(likelihood: str) -> None:
    out_dim = 3 if likelihood == "categorical" else 1
    bnn = BNN(2, hidden=(4,), out_dim=out_dim, likelihood=likelihood, noise_std=0.3)
    x = torch.randn(9, 2)
    y = {
        "gaussian": torch.randn(9),
        "student_t": torch.randn(9),
        "bernoulli": torch.randint(0, 2, (9,)).float(),
        "categorical": torch.randint(0, 3, (9,)),
    }[likelihood]
    trace = pyro.poutine.trace(bnn).get_trace(x, y)
    f = trace.nodes["f"]["value"]
    expected = {
        "gaussian": lambda: dist.Normal(f[:, 0], 0.3).log_prob(y).sum(),
        "student_t": lambda: dist.StudentT(4.0, f[:, 0], 0.3).log_prob(y).sum(),
        "bernoulli": lambda: dist.Bernoulli(logits=f[:, 0]).log_prob(y).sum(),
        "categorical": lambda: dist.Categorical(logits=f).log_prob(y).sum(),
    }[likelihood]()
    obs = trace.nodes["obs"]
    torch.testing.assert_close(obs["fn"].log_prob(obs["value"]).sum(), expected)


def test_total_size_scales_the_likelihood() -> None:
    bnn = BNN(2, hidden=(4,), noise_std=0.5)
    x, y = torch.randn(8, 2), torch.randn(8)
    trace = pyro.poutine.trace(bnn).get_trace(x, y, total_size=80)
    trace.compute_log_prob()
    full = trace.nodes["obs"]["fn"].log_prob(trace.nodes["obs"]["value"]).sum()
    torch.testing.assert_close(trace.nodes["obs"]["log_prob_sum"], 10 * full)


def test_prior_function_draws_match_the_nngp_kernel() -> None:
    """A wide one-hidden-layer tanh BNN's prior covariance converges to its NNGP kernel.

    1024 units, 4000 draws: the empirical covariance has relative Frobenius error of order
    sqrt(2/4000) + O(1/width) ≈ 0.03; we allow 0.08.
    """
    torch.manual_seed(0)
    prior = GaussianPrior(2, weight_std=1.3, bias_std=0.4)
    bnn = BNN(2, hidden=(1024,), prior=prior)
    x = torch.randn(6, 2, dtype=torch.float64)
    f = bnn.sample_functions(x, 4000).squeeze(-1).detach()
    assert f.shape == (4000, 6)
    empirical = f.T @ f / f.shape[0]
    exact = kernels.nngp(x, activation="tanh", depth=1, weight_std=1.3, bias_std=0.4)
    assert (torch.linalg.norm(empirical - exact) / torch.linalg.norm(exact)).item() < 0.08


def test_sample_functions_is_reparameterised() -> None:
    bnn = BNN(1, hidden=(16,), prior=HierarchicalPrior(2))
    f = bnn.sample_functions(torch.linspace(-1, 1, 5).unsqueeze(-1), 32)
    f.pow(2).mean().backward()
    grad = bnn.prior.raw_weight_shape.grad
    assert grad is not None and torch.isfinite(grad).all() and (grad != 0).any()


def test_pyro_nuts_and_svi_run_the_model() -> None:
    torch.manual_seed(0)
    pyro.set_rng_seed(0)
    x = torch.linspace(-2, 2, 20).unsqueeze(-1)
    y = torch.sin(2 * x[:, 0]) + 0.1 * torch.randn(20)
    bnn = BNN(1, hidden=(8,), noise_std=0.1)
    mcmc = MCMC(NUTS(bnn, max_tree_depth=4), num_samples=10, warmup_steps=10, disable_progbar=True)
    mcmc.run(x, y)
    assert mcmc.get_samples()["layers.0.weight"].shape == (10, 1, 8)

    pyro.clear_param_store()
    guide = AutoNormal(bnn)
    svi = SVI(bnn, guide, pyro.optim.Adam({"lr": 0.02}), Trace_ELBO())
    losses = [svi.step(x, y) for _ in range(200)]
    assert sum(losses[-20:]) / 20 < 0.5 * sum(losses[:20]) / 20


def test_bayesact_mcmc_svi_and_predictive_run_the_model() -> None:
    """bayesact.infer.mcmc and .svi run the BNN; predictive recomputes f at new inputs exactly."""
    x = torch.linspace(-2, 2, 20).unsqueeze(-1)
    y = torch.sin(2 * x[:, 0]) + 0.1 * torch.randn(20)
    bnn = BNN(1, hidden=(8,))
    post = infer.mcmc(bnn, x, y, num_chains=2, num_warmup=10, num_samples=5, max_tree_depth=4, seed=0,
                      progress=False)  # fmt: skip
    assert post.samples["layers.0.weight"].shape == (2, 5, 1, 8) and post.samples["f"].shape == (2, 5, 20, 1)
    x_new = torch.linspace(-3, 3, 7).unsqueeze(-1)
    f_new = infer.predictive(bnn, post, x_new, None, seed=0)["f"]
    w0, b0 = post.samples["layers.0.weight"][1, 3], post.samples["layers.0.bias"][1, 3]
    w1, b1 = post.samples["layers.1.weight"][1, 3], post.samples["layers.1.bias"][1, 3]
    expected = torch.tanh(x_new @ w0 + b0) @ w1 / math.sqrt(8) + b1
    torch.testing.assert_close(f_new[1, 3], expected)
    result = infer.svi(bnn, x, y, num_steps=200, lr=0.02, progress=False, seed=0)
    assert sum(result.losses[-20:]) < 0.5 * sum(result.losses[:20])


def test_vectorised_predictive_shapes() -> None:
    bnn = BNN(3, hidden=(5,), prior=HierarchicalPrior(2))
    draws = Predictive(bnn, num_samples=7, parallel=True)(torch.randn(4, 3))
    assert draws["obs"].shape == (7, 4, 1)
    assert draws["f"].reshape(7, 4, 1).shape == (7, 4, 1)


@pytest.mark.parametrize(
    ("make", "error", "message"),
    [
        (lambda: BNN(0), ValueError, "'in_dim' must be a positive int"),
        (lambda: BNN(2, hidden=5), TypeError, "'hidden' must be a sequence"),
        (lambda: BNN(2, hidden=(4, 0)), ValueError, "'hidden' must be a positive int"),
        (lambda: BNN(2, likelihood="poisson"), ValueError, "'likelihood' must be one of"),
        (lambda: BNN(2, out_dim=2, likelihood="bernoulli"), ValueError, "'out_dim' must be 1"),
        (lambda: BNN(2, noise_std=-1.0), ValueError, "'noise_std' must be a number > 0"),
        (lambda: BNN(2, prior=GaussianPrior(3)), ValueError, "'prior' covers 3 layers"),
        (lambda: BNN(2, prior="wide"), TypeError, "'prior' must be a WeightPrior"),
        (lambda: BNN(2, activation="swiglu"), ValueError, "'activation' must be elementwise"),
        (lambda: BNN(2, activation="tanhh"), ValueError, "unknown activation 'tanhh'"),
        (lambda: BNN(2)(torch.randn(5, 3)), ValueError, "'x' must have shape \\(N, 2\\)"),
        (lambda: BNN(2)(torch.randn(5, 2), torch.randn(4)), ValueError, "'y' has 4 rows"),
        (lambda: BNN(2)(torch.full((5, 2), float("nan"))), ValueError, "'x' contains NaN"),
        (lambda: BNN(2)(torch.randn(5, 2), torch.full((5,), float("nan"))), ValueError, "'y' contains NaN"),
        (lambda: BNN(2).sample_functions(torch.randn(5, 2), 0), ValueError, "'n' must be a positive int"),
    ],
)
def test_bad_input(make, error: type[Exception], message: str) -> None:
    with pytest.raises(error, match=message):
        make()
