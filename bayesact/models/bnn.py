"""Fully connected Bayesian neural networks as Pyro models."""

from __future__ import annotations

import math
from collections.abc import Sequence
from typing import Any

import pyro
from pyro.nn import PyroModule
from torch import Tensor, nn

from bayesact import activations
from bayesact.infer import is_concrete
from bayesact.priors import GaussianPrior, WeightPrior
from bayesact.priors._checks import check_int

from .likelihoods import LIKELIHOODS, Gaussian, Likelihood, StudentT, drop_data_slot, make_likelihood

__all__ = ["BNN", "LIKELIHOODS"]


def _activation_module(activation: str | nn.Module) -> nn.Module:
    module: nn.Module
    if isinstance(activation, str):
        module = activations.get(activation, trainable=False)
    elif isinstance(activation, nn.Module):
        module = activation
    else:
        kind = type(activation).__name__
        raise TypeError(f"'activation' must be a registry name or an nn.Module, got {kind}")
    name = getattr(module, "name", None)
    if name is not None and not activations.info(name).elementwise:
        raise ValueError(f"'activation' must be elementwise for a dense BNN, got {name!r}")
    return module


class BNN(PyroModule):
    """A Bayesian MLP: ``pyro.sample`` sites for every weight and bias, a likelihood on the outputs.

    Layer l computes h_{l+1} = φ(h_l W_l / sqrt(fan_in_l) + b_l) (no φ after the last layer), with
    (W_l, b_l) drawn from ``prior`` (default: :class:`~bayesact.priors.GaussianPrior` with unit stds,
    the fixed N(0, 1) prior). Sites: ``layers.{l}.weight`` (fan_in, fan_out), ``layers.{l}.bias``,
    the prior's own latents (e.g. variances), the likelihood's (``noise_std`` for a Gaussian/Student-t
    likelihood when ``noise_std=None``, ``df`` for a Student-t one when ``student_t_df=None``), the
    deterministic ``f`` (network outputs, shape (..., N, out_dim)) and the observed ``obs`` ((N, out_dim)
    for Gaussian/Student-t, (N,) labels otherwise; a regression target of shape (N,) is accepted when
    out_dim = 1). The likelihood is a :mod:`bayesact.models.likelihoods` object.

    Call as ``bnn(x, y)`` (``y=None`` to sample outputs); ``total_size`` scales a minibatch's
    likelihood to the full data set. Runs under ``bayesact.infer`` and Pyro's own MCMC/SVI.

    Args:
        in_dim: input features.
        hidden: hidden-layer widths.
        out_dim: outputs (classes for ``likelihood="categorical"``).
        activation: a name from :mod:`bayesact.activations` or an elementwise module.
        prior: a :class:`~bayesact.priors.WeightPrior` (or anything with a ``.prior`` attribute that is
            one, such as a fitted functional prior) over ``len(hidden) + 1`` layers; a prior made
            without a layer count (``GaussianPrior()``) takes the network's.
        likelihood: "gaussian", "student_t", "bernoulli" or "categorical", or a
            :class:`~bayesact.models.likelihoods.Likelihood` instance (which holds its own noise settings).
        noise_std: fixed observation noise of a named gaussian/student_t likelihood; ``None`` makes it a
            latent with a HalfNormal(1) prior.
        student_t_df: degrees of freedom of a named student_t likelihood; ``None`` makes them a latent
            ``df`` with a Gamma(2, 0.1) prior.
    """

    def __init__(
        self,
        in_dim: int,
        hidden: Sequence[int] = (50,),
        out_dim: int = 1,
        activation: str | nn.Module = "tanh",
        prior: WeightPrior | Any | None = None,
        likelihood: str | Likelihood = "gaussian",
        noise_std: float | None = None,
        student_t_df: float | None = 4.0,
    ):
        super().__init__()
        if isinstance(hidden, int) or not isinstance(hidden, Sequence):
            raise TypeError(f"'hidden' must be a sequence of widths, got {type(hidden).__name__}")
        self.widths = (
            check_int(in_dim, "in_dim"),
            *(check_int(h, "hidden") for h in hidden),
            check_int(out_dim, "out_dim"),
        )
        self.likelihood = make_likelihood(likelihood, noise_std=noise_std, student_t_df=student_t_df)
        self.likelihood.check_out_dim(out_dim)
        # nn.Module.__setattr__ registers the submodule; the read-only property only reads it back
        self.activation = _activation_module(activation)  # type: ignore[misc]
        weight_prior = prior.prior if prior is not None and hasattr(prior, "prior") else prior
        weight_prior = weight_prior if weight_prior is not None else GaussianPrior()
        if not isinstance(weight_prior, WeightPrior):
            raise TypeError(f"'prior' must be a WeightPrior, got {type(weight_prior).__name__}")
        if weight_prior.num_layers not in (None, self.num_layers):
            raise ValueError(
                f"'prior' covers {weight_prior.num_layers} layers but the network has {self.num_layers}"
            )
        self.prior = weight_prior.bind(self.num_layers)  # type: ignore[misc]

    @property
    def noise_std(self) -> float | None:
        """The fixed observation noise of a Gaussian/Student-t likelihood (``None``: latent, or none)."""
        return self.likelihood.noise_std if isinstance(self.likelihood, Gaussian | StudentT) else None

    # The submodules as class-level properties, so that protocol checks (which look attributes up
    # statically from Python 3.12 on) see them; reads still go through PyroModule.__getattr__, which
    # registers their parameters with Pyro (``pyro.module``) as a plain attribute read does.
    @property
    def prior(self) -> WeightPrior:
        """The weight prior (:class:`~bayesact.priors.WeightPrior`) over the network's layers."""
        return super().__getattr__("prior")

    @property
    def activation(self) -> nn.Module:
        """The elementwise activation φ applied after every hidden layer."""
        return super().__getattr__("activation")

    @property
    def in_dim(self) -> int:
        """Number of input features."""
        return self.widths[0]

    @property
    def num_layers(self) -> int:
        """Number of dense layers (hidden layers + the output layer)."""
        return len(self.widths) - 1

    # ------------------------------------------------------------------ the network
    def _check_x(self, x: Any) -> None:
        if not isinstance(x, Tensor) or not x.is_floating_point():
            raise TypeError("'x' must be a floating-point tensor of shape (N, in_dim)")
        if x.dim() != 2 or x.shape[-1] != self.widths[0]:
            raise ValueError(f"'x' must have shape (N, {self.widths[0]}), got {tuple(x.shape)}")
        if is_concrete(x) and not bool(x.isfinite().all()):
            raise ValueError("'x' contains NaN or inf")

    def _layer(self, h: Tensor, weight: Tensor, bias: Tensor, layer: int) -> Tensor:
        out = h @ (weight / math.sqrt(self.widths[layer])) + bias.unsqueeze(-2)
        return self.activation(out) if layer < self.num_layers - 1 else out

    def forward(self, x: Tensor, y: Tensor | None = None, total_size: int | None = None) -> Tensor:
        self._check_x(x)
        y = self.likelihood.validate(y, num_rows=x.shape[0], out_dim=self.widths[-1], dtype=x.dtype)
        h = x
        for layer in range(self.num_layers):
            fan_in, fan_out = self.widths[layer], self.widths[layer + 1]
            weight, bias = self.prior.pyro_sample_layer(
                layer, self.prior.layer_site(layer), fan_in, fan_out, dtype=x.dtype, device=x.device
            )
            h = self._layer(h, drop_data_slot(weight, 2), drop_data_slot(bias, 1), layer)
        f = pyro.deterministic("f", h)
        self.likelihood.sample("obs", f, y, total_size=total_size)
        return f

    def sample_functions(self, x: Tensor, n: int) -> Tensor:
        """``n`` prior function draws at ``x`` in one batched pass: shape (n, len(x), out_dim).

        Reparameterised: differentiable with respect to the prior's hyperparameters (and the
        activation's parameters, if trainable).
        """
        self._check_x(x)
        check_int(n, "n")
        h = x
        for layer in range(self.num_layers):
            weight, bias = self.prior.rsample_layer(layer, self.widths[layer], self.widths[layer + 1], n)
            h = self._layer(h, weight.to(x.dtype), bias.to(x.dtype), layer)
        return h

    # ------------------------------------------------------------------ Gibbs hook (SGHMC)
    # The BNN satisfies bayesact.infer.protocols.GibbsHook structurally by delegating to its prior.
    @property
    def gibbs_sites(self) -> tuple[str, ...]:
        """Latent sites updated by :meth:`gibbs_update` rather than by gradient dynamics: the prior's
        (the per-layer variances of a :class:`~bayesact.priors.HierarchicalPrior`; none for a Gaussian one).
        """
        return self.prior.gibbs_sites

    def gibbs_update(self, values: dict[str, Tensor]) -> dict[str, Tensor]:
        """New values of :attr:`gibbs_sites` drawn from their full conditionals given the weights.

        ``values`` maps site names to current values with any leading (chain) dimensions; the prior
        draws them (a hierarchical prior: InvGamma(α + n/2, β + Σw²/2) of each layer's weights or biases).
        """
        return self.prior.gibbs_update(values)
