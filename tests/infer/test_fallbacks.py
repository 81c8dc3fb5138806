"""Evaluation fallbacks (models vmap cannot batch) and the device path."""

from __future__ import annotations

import math

import pyro
import pyro.distributions as dist
import pytest
import torch

from bayesact.infer import mcmc
from bayesact.infer.potential import Potential

DT = torch.float64
Y = torch.tensor([0.4, -0.2, 1.1], dtype=DT)


def item_model(y: torch.Tensor) -> None:
    mu = pyro.sample("mu", dist.Normal(torch.tensor(0.0, dtype=DT), 1.0))
    scale = 1.0 if mu.item() > -100 else 2.0  # .item() cannot be batched by vmap
    pyro.sample("y", dist.Normal(mu, scale).expand([3]).to_event(1), obs=y)


def plain_model(y: torch.Tensor) -> None:
    mu = pyro.sample("mu", dist.Normal(torch.tensor(0.0, dtype=DT), 1.0))
    sigma = pyro.sample("sigma", dist.LogNormal(torch.tensor(0.0, dtype=DT), 0.5))
    pyro.sample("y", dist.Normal(mu, sigma).expand([3]).to_event(1), obs=y)


def test_unbatchable_model_falls_back_to_a_per_chain_loop():
    post = mcmc(item_model, Y, num_chains=2, num_warmup=100, num_samples=200, seed=0,
                progress=False)
    assert post.info["potential_mode"] == "loop"
    exact_mean = float(Y.sum()) / 4  # conjugate: N(Σy/(n+1), 1/(n+1))
    mcse = 0.5 / math.sqrt(100)  # sd 0.5, ESS >= 100 for this 1-D target (conservative)
    assert abs(float(post.samples["mu"].mean()) - exact_mean) < 4 * mcse


@pytest.mark.parametrize("capture", [True, False])
def test_captured_and_vmapped_gradients_agree_with_autograd(capture):
    pot = Potential(plain_model, (Y,), {}, DT, torch.device("cpu"))
    mode = pot.prepare(3, capture=capture)
    assert mode == ("captured" if capture else "vmap")
    z = torch.randn(3, pot.dim, dtype=DT)
    u, g = pot.value_and_grad(z)
    for i in range(3):
        x = z[i].clone().requires_grad_(True)
        ui = pot.potential_one(x)
        (gi,) = torch.autograd.grad(ui, x)
        torch.testing.assert_close(u[i], ui.detach())
        torch.testing.assert_close(g[i], gi)
    # U includes the log-Jacobian of exp for the LogNormal site: check one value by hand
    mu, log_s = z[0, 0], z[0, 1]
    s = log_s.exp()
    ref = -(dist.Normal(0.0, 1.0).log_prob(mu) + dist.LogNormal(0.0, 0.5).log_prob(s) + log_s
            + dist.Normal(mu, s).log_prob(Y).sum())
    torch.testing.assert_close(u[0], ref)


@pytest.mark.gpu
def test_vectorized_chains_on_cuda():
    post = mcmc(plain_model, Y.cuda(), num_chains=64, num_warmup=100, num_samples=100, seed=0,
                progress=False)
    assert post.samples["mu"].device.type == "cuda"
    assert post.samples["mu"].shape == (64, 100)
    assert bool((post.samples["sigma"] > 0).all())


@pytest.mark.slow
def test_compiled_leaf_samples_the_conjugate_posterior():
    # torch.compile of the whole NUTS leaf (20-60 s to compile): same target, 4-MCSE check.
    y = torch.tensor([0.4, -0.2, 1.1, 0.8], dtype=DT)

    def model(y):
        mu = pyro.sample("mu", dist.Normal(torch.tensor(0.0, dtype=DT), 1.0))
        pyro.sample("y", dist.Normal(mu, 1.0).expand([4]).to_event(1), obs=y)

    post = mcmc(model, y, num_chains=4, num_warmup=200, num_samples=500, seed=0,
                progress=False, compile=True)
    assert post.info["potential_mode"] == "captured+compiled_leaf"
    exact_mean, exact_sd = float(y.sum()) / 5, 5**-0.5
    mcse = exact_sd / math.sqrt(500)  # ESS >= 500 of 2000 draws (conservative)
    assert abs(float(post.samples["mu"].mean()) - exact_mean) < 4 * mcse
    assert abs(float(post.samples["mu"].std()) - exact_sd) < 0.1 * exact_sd


@pytest.mark.slow
def test_compiled_function_does_not_merge_arguments_that_were_the_same_tensor():
    # make_fx tracks tensors by identity: compiled with the same tensor for both arguments (as
    # a one-point NUTS tree has), later calls with distinct tensors must still use both
    from bayesact.infer.compiled import CompiledFunction

    def diff(a: torch.Tensor, b: torch.Tensor) -> torch.Tensor:
        return a - 2 * b

    t = torch.arange(3.0, dtype=DT)
    fn = CompiledFunction(diff, (t, t))
    a, b = torch.tensor([1.0, 2.0, 3.0], dtype=DT), torch.tensor([0.5, -1.0, 4.0], dtype=DT)
    torch.testing.assert_close(fn(a, b), a - 2 * b)
