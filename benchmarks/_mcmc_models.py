"""Benchmark models for the MCMC benchmark and the BNN example (plain Pyro model functions).

(a) a BNN: MLP d -> 50 -> 50 -> 1, tanh, N(0, 1) weight priors, HalfNormal noise, on
scikit-learn's diabetes data (N = 442, d = 10); (b) logistic regression on scikit-learn's
breast cancer data (N = 569, d = 30). Features are standardised; diabetes targets too.
Each model also has a bare torch log density of the same joint on a flat unconstrained vector,
used to time the gradient floor.
"""

from __future__ import annotations

import numpy as np
import pyro
import pyro.distributions as dist
import torch

HIDDEN = 50


def diabetes(dtype: torch.dtype = torch.float32) -> tuple[torch.Tensor, torch.Tensor]:
    """Standardised scikit-learn diabetes features (442, 10) and targets (442,)."""
    from sklearn.datasets import load_diabetes

    x, y = load_diabetes(return_X_y=True)
    x = (x - x.mean(0)) / x.std(0)
    y = (y - y.mean()) / y.std()
    return torch.as_tensor(x, dtype=dtype), torch.as_tensor(y, dtype=dtype)


def breast_cancer(dtype: torch.dtype = torch.float32) -> tuple[torch.Tensor, torch.Tensor]:
    """Standardised scikit-learn breast cancer features (569, 30) and 0/1 labels (569,)."""
    from sklearn.datasets import load_breast_cancer

    x, y = load_breast_cancer(return_X_y=True)
    x = (x - x.mean(0)) / x.std(0)
    return torch.as_tensor(x, dtype=dtype), torch.as_tensor(y.astype(np.float64), dtype=dtype)


def bnn_model(x: torch.Tensor, y: torch.Tensor | None = None) -> torch.Tensor:
    """MLP d -> 50 -> 50 -> 1 with tanh, N(0, 1) weights and biases, HalfNormal(1) noise."""
    d = x.shape[-1]
    zero = x.new_zeros(())
    one = x.new_ones(())
    w1 = pyro.sample("w1", dist.Normal(zero, one).expand([d, HIDDEN]).to_event(2))
    b1 = pyro.sample("b1", dist.Normal(zero, one).expand([HIDDEN]).to_event(1))
    w2 = pyro.sample("w2", dist.Normal(zero, one).expand([HIDDEN, HIDDEN]).to_event(2))
    b2 = pyro.sample("b2", dist.Normal(zero, one).expand([HIDDEN]).to_event(1))
    w3 = pyro.sample("w3", dist.Normal(zero, one).expand([HIDDEN]).to_event(1))
    b3 = pyro.sample("b3", dist.Normal(zero, one))
    sigma = pyro.sample("sigma", dist.HalfNormal(one))
    h = torch.tanh(x @ w1 + b1)
    h = torch.tanh(h @ w2 + b2)
    f = h @ w3 + b3
    with pyro.plate("data", x.shape[0]):
        pyro.sample("y", dist.Normal(f, sigma), obs=y)
    return f


def logistic_model(x: torch.Tensor, y: torch.Tensor | None = None) -> torch.Tensor:
    """Logistic regression with N(0, 1) coefficients and intercept."""
    d = x.shape[-1]
    zero = x.new_zeros(())
    one = x.new_ones(())
    beta = pyro.sample("beta", dist.Normal(zero, one).expand([d]).to_event(1))
    alpha = pyro.sample("alpha", dist.Normal(zero, one))
    logits = x @ beta + alpha
    with pyro.plate("data", x.shape[0]):
        pyro.sample("y", dist.Bernoulli(logits=logits), obs=y)
    return logits


def bnn_bare_potential(x: torch.Tensor, y: torch.Tensor):
    """U(z) of ``bnn_model`` on the flat vector (w1, b1, w2, b2, w3, b3, log sigma), batched."""
    d = x.shape[-1]
    sizes = [d * HIDDEN, HIDDEN, HIDDEN * HIDDEN, HIDDEN, HIDDEN, 1, 1]
    half_log_2pi = 0.5 * float(np.log(2 * np.pi))

    def potential(z: torch.Tensor) -> torch.Tensor:
        w1, b1, w2, b2, w3, b3, log_s = torch.split(z, sizes, dim=-1)
        c = z.shape[0]
        h = torch.tanh(torch.baddbmm(b1[:, None, :], x.expand(c, *x.shape), w1.view(c, d, HIDDEN)))
        h = torch.tanh(torch.baddbmm(b2[:, None, :], h, w2.view(c, HIDDEN, HIDDEN)))
        f = torch.bmm(h, w3[:, :, None])[..., 0] + b3
        s = log_s.exp()
        n = y.shape[-1]
        log_lik = -0.5 * (((y - f) / s) ** 2).sum(-1) - n * (log_s[:, 0] + half_log_2pi)
        weights = z[:, :-1]
        log_prior = -0.5 * (weights**2).sum(-1) - weights.shape[-1] * half_log_2pi
        # HalfNormal(1) on sigma plus the log-Jacobian of exp.
        log_prior = log_prior + (0.5 * np.log(2 / np.pi) - 0.5 * s**2 + log_s)[:, 0]
        return -(log_lik + log_prior)

    return potential, sum(sizes)


def logistic_bare_potential(x: torch.Tensor, y: torch.Tensor):
    """U(z) of ``logistic_model`` on the flat vector (beta, alpha), batched."""
    d = x.shape[-1]
    half_log_2pi = 0.5 * float(np.log(2 * np.pi))

    def potential(z: torch.Tensor) -> torch.Tensor:
        logits = z[:, :d] @ x.T + z[:, d:]
        log_lik = (y * logits - torch.nn.functional.softplus(logits)).sum(-1)
        log_prior = -0.5 * (z**2).sum(-1) - (d + 1) * half_log_2pi
        return -(log_lik + log_prior)

    return potential, d + 1


def bnn_forward(samples: dict, x: torch.Tensor) -> torch.Tensor:
    """Network output f(x) for every draw of ``samples`` (chain, draw, ...): (chain, draw, n)."""
    s = {k: torch.as_tensor(np.asarray(v), dtype=x.dtype) for k, v in samples.items()}
    h = torch.tanh(x @ s["w1"] + s["b1"][..., None, :])
    h = torch.tanh(h @ s["w2"] + s["b2"][..., None, :])
    return (h @ s["w3"][..., None])[..., 0] + s["b3"][..., None]


# -- SGHMC: the functional-prior paper's network (one hidden layer of 100 tanh units) -------
SGHMC_HIDDEN = 100
SGHMC_NOISE_STD = 0.1**0.5  # fixed noise variance 0.1 on standardised targets, as in the paper


def sghmc_bnn_model(x: torch.Tensor, y: torch.Tensor | None = None) -> torch.Tensor:
    """MLP d -> 100 -> 1 (tanh), N(0, 1) weights scaled by 1/sqrt(fan_in), fixed noise 0.1."""
    d = x.shape[-1]
    zero, one = x.new_zeros(()), x.new_ones(())
    w1 = pyro.sample("w1", dist.Normal(zero, one).expand([d, SGHMC_HIDDEN]).to_event(2))
    b1 = pyro.sample("b1", dist.Normal(zero, one).expand([SGHMC_HIDDEN]).to_event(1))
    w2 = pyro.sample("w2", dist.Normal(zero, one).expand([SGHMC_HIDDEN]).to_event(1))
    b2 = pyro.sample("b2", dist.Normal(zero, one))
    h = torch.tanh(x @ w1 / d**0.5 + b1)
    f = pyro.deterministic("f", h @ w2 / SGHMC_HIDDEN**0.5 + b2)
    with pyro.plate("data", x.shape[0]):
        pyro.sample("y", dist.Normal(f, SGHMC_NOISE_STD), obs=y)
    return f


def sghmc_bnn_bare_potential(x: torch.Tensor, y: torch.Tensor, num_data: int):
    """Ũ(z; rows) of ``sghmc_bnn_model`` on per-chain minibatches ``rows`` (C, B), batched."""
    d = x.shape[-1]
    sizes = [d * SGHMC_HIDDEN, SGHMC_HIDDEN, SGHMC_HIDDEN, 1]
    half_log_2pi = 0.5 * float(np.log(2 * np.pi))

    def potential(z: torch.Tensor, rows: torch.Tensor) -> torch.Tensor:
        w1, b1, w2, b2 = torch.split(z, sizes, dim=-1)
        c, b = rows.shape
        h = torch.tanh(torch.baddbmm(b1[:, None, :], x[rows], w1.view(c, d, SGHMC_HIDDEN) / d**0.5))
        f = torch.bmm(h, w2[:, :, None])[..., 0] / SGHMC_HIDDEN**0.5 + b2
        resid = (y[rows] - f) / SGHMC_NOISE_STD
        log_lik = -0.5 * (resid**2).sum(-1) - b * (float(np.log(SGHMC_NOISE_STD)) + half_log_2pi)
        log_prior = -0.5 * (z**2).sum(-1) - z.shape[-1] * half_log_2pi
        return -(num_data / b * log_lik + log_prior)

    return potential, sum(sizes)
