"""Fully connected Bayesian neural networks as Pyro models."""

from __future__ import annotations

import math
from collections.abc import Sequence
from typing import Any

import pyro
import pyro.distributions as dist
import torch
from pyro.nn import PyroModule
from torch import Tensor, nn
from torch._C._functorch import is_batchedtensor
from torch.fx.experimental.proxy_tensor import get_proxy_mode

from bayesact import activations
from bayesact.priors import GaussianPrior, WeightPrior
from bayesact.priors._checks import check_int

LIKELIHOODS = ("gaussian", "student_t", "bernoulli", "categorical")
STUDENT_T_DF = 4.0


def _activation_module(activation: str | nn.Module) -> nn.Module:
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


def _concrete(t: Tensor) -> bool:
    """Whether ``t`` holds values a data-dependent check can read: not while the model is traced
    (``make_fx``, ``torch.compile``) or ``t`` is vmapped. The eager call that precedes every capture
    runs the checks."""
    return get_proxy_mode() is None and not torch.compiler.is_compiling() and not is_batchedtensor(t)


def _all_finite(t: Tensor) -> bool:
    """``isfinite(t).all()`` (one host sync), or ``True`` where ``t`` is not concrete."""
    return not _concrete(t) or bool(torch.isfinite(t).all())


def _drop_data_slot(value: Tensor, event_dim: int) -> Tensor:
    """A global latent's value without the size-1 batch slot of the data plate (dim -1).

    Under vectorised Predictive or ELBO particles, a latent sampled outside the data plate has batch
    shape (..., particles, 1); the trailing 1 is the data plate's slot, which the network's N
    dimension takes instead.
    """
    return value.squeeze(value.dim() - event_dim - 1) if value.dim() > event_dim else value


class BNN(PyroModule):
    """A Bayesian MLP: ``pyro.sample`` sites for every weight and bias, a likelihood on the outputs.

    Layer l computes h_{l+1} = φ(h_l W_l / sqrt(fan_in_l) + b_l) (no φ after the last layer), with
    (W_l, b_l) drawn from ``prior`` (default: :class:`~bayesact.priors.GaussianPrior` with unit stds,
    the fixed N(0, 1) prior). Sites: ``layers.{l}.weight`` (fan_in, fan_out), ``layers.{l}.bias``,
    the prior's own latents (e.g. variances), ``noise_std`` for a Gaussian/Student-t likelihood when
    ``noise_std=None``, the deterministic ``f`` (network outputs, shape (..., N, out_dim)) and the
    observed ``obs`` ((N, out_dim) for Gaussian/Student-t, (N,) labels otherwise; a regression target of
    shape (N,) is accepted when out_dim = 1).

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
        likelihood: "gaussian", "student_t" (4 degrees of freedom), "bernoulli" or "categorical".
        noise_std: fixed observation noise; ``None`` makes it a latent with a HalfNormal(1) prior.
    """

    def __init__(
        self,
        in_dim: int,
        hidden: Sequence[int] = (50,),
        out_dim: int = 1,
        activation: str | nn.Module = "tanh",
        prior: WeightPrior | Any | None = None,
        likelihood: str = "gaussian",
        noise_std: float | None = None,
    ):
        super().__init__()
        if isinstance(hidden, int) or not isinstance(hidden, Sequence):
            raise TypeError(f"'hidden' must be a sequence of widths, got {type(hidden).__name__}")
        self.widths = (
            check_int(in_dim, "in_dim"),
            *(check_int(h, "hidden") for h in hidden),
            check_int(out_dim, "out_dim"),
        )
        if likelihood not in LIKELIHOODS:
            raise ValueError(f"'likelihood' must be one of {LIKELIHOODS}, got {likelihood!r}")
        if likelihood == "bernoulli" and out_dim != 1:
            raise ValueError("'out_dim' must be 1 for a bernoulli likelihood")
        if noise_std is not None and not (isinstance(noise_std, int | float) and noise_std > 0):
            raise ValueError(f"'noise_std' must be a number > 0 or None, got {noise_std!r}")
        self.likelihood = likelihood
        self.noise_std = None if noise_std is None else float(noise_std)
        self.activation = _activation_module(activation)
        weight_prior = prior.prior if prior is not None and hasattr(prior, "prior") else prior
        weight_prior = weight_prior if weight_prior is not None else GaussianPrior()
        if not isinstance(weight_prior, WeightPrior):
            raise TypeError(f"'prior' must be a WeightPrior, got {type(weight_prior).__name__}")
        if weight_prior.num_layers not in (None, self.num_layers):
            raise ValueError(
                f"'prior' covers {weight_prior.num_layers} layers but the network has {self.num_layers}"
            )
        self.prior = weight_prior.bind(self.num_layers)

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
        if not _all_finite(x):
            raise ValueError("'x' contains NaN or inf")

    def _layer(self, h: Tensor, weight: Tensor, bias: Tensor, layer: int) -> Tensor:
        out = h @ (weight / math.sqrt(self.widths[layer])) + bias.unsqueeze(-2)
        return self.activation(out) if layer < self.num_layers - 1 else out

    def forward(self, x: Tensor, y: Tensor | None = None, total_size: int | None = None) -> Tensor:
        self._check_x(x)
        y = self._check_y(y, x.shape[0], x.dtype)
        h = x
        for layer in range(self.num_layers):
            fan_in, fan_out = self.widths[layer], self.widths[layer + 1]
            weight, bias = self.prior.pyro_sample_layer(
                layer, self.prior.layer_site(layer), fan_in, fan_out, dtype=x.dtype, device=x.device
            )
            h = self._layer(h, _drop_data_slot(weight, 2), _drop_data_slot(bias, 1), layer)
        f = pyro.deterministic("f", h)
        self._observe(f, y, x.shape[0], total_size)
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

    # ------------------------------------------------------------------ the likelihood
    def _observe(self, f: Tensor, y: Tensor | None, n: int, total_size: int | None) -> None:
        if self.likelihood in ("gaussian", "student_t"):
            scale: Tensor | float
            if self.noise_std is None:
                one = torch.ones((), dtype=f.dtype, device=f.device)
                latent = pyro.sample("noise_std", dist.HalfNormal(one))
                scale = _drop_data_slot(latent, 0)[..., None, None]  # batch dims, then (N, out_dim)
            else:
                scale = self.noise_std
            base = (dist.Normal(f, scale) if self.likelihood == "gaussian"
                    else dist.StudentT(STUDENT_T_DF, f, scale))
            obs_dist: dist.Distribution = base.to_event(1)
        elif self.likelihood == "bernoulli":
            obs_dist = dist.Bernoulli(logits=f[..., 0])
        else:
            obs_dist = dist.Categorical(logits=f)
        size = n if total_size is None else total_size
        with pyro.plate("data", size=size, subsample=torch.arange(n, device=f.device)):
            pyro.sample("obs", obs_dist, obs=y)

    def _check_y(self, y: Tensor | None, n: int, dtype: torch.dtype) -> Tensor | None:
        """``y`` checked against the likelihood and cast for it: regression targets and bernoulli
        labels to the network's dtype, categorical labels to int64."""
        if y is None:
            return None
        if not isinstance(y, Tensor) or y.is_complex():
            raise TypeError(f"'y' must be a real tensor or None, got {type(y).__name__}")
        if y.dim() == 0 or y.shape[0] != n:
            raise ValueError(f"'y' has {y.shape[0] if y.dim() else 0} rows but 'x' has {n}")
        if self.likelihood in ("gaussian", "student_t"):
            if y.is_floating_point() and not _all_finite(y):
                raise ValueError("'y' contains NaN or inf")
            if y.dim() == 1 and self.widths[-1] == 1:
                y = y.unsqueeze(-1)
            if y.shape != (n, self.widths[-1]):
                raise ValueError(f"'y' must have shape ({n}, {self.widths[-1]}), got {tuple(y.shape)}")
            return y.to(dtype)
        if y.dim() != 1:
            raise ValueError(f"'y' must have shape ({n},) for a {self.likelihood} likelihood")
        num_classes = 2 if self.likelihood == "bernoulli" else self.widths[-1]
        self._check_labels(y, num_classes)
        return y.to(dtype) if self.likelihood == "bernoulli" else y.long()

    def _check_labels(self, y: Tensor, num_classes: int) -> None:
        """Labels must be the integers 0..num_classes-1 (one host sync, on concrete tensors only)."""
        if not _concrete(y):
            return
        valid = (y >= 0) & (y < num_classes)
        if y.is_floating_point():
            valid &= y == torch.round(y)  # NaN fails every comparison
        if bool(valid.all()):
            return
        if y.is_floating_point() and not bool(torch.isfinite(y).all()):
            raise ValueError("'y' contains NaN or inf")
        if self.likelihood == "bernoulli":
            allowed = "0 or 1"
        else:
            allowed = f"integers 0 to {num_classes - 1} for out_dim={num_classes}"
        raise ValueError(f"'y' must hold {self.likelihood} labels ({allowed}), got {y[~valid][0].item()!r}")
