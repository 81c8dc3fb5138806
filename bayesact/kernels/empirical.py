"""Monte Carlo NNGP and NTK from finite-width random networks, vectorised over networks.

The networks are the ones ``nngp``/``ntk`` take to infinite width: [Dense(W_std, b_std) → φ] × depth
→ Dense(W_std, b_std) in the NTK parameterization, z^{l+1} = (W_std/√n_l)·W^l·h^l + b_std·β^l with
W^l, β^l ~ N(0, 1), h^0 = x (n_0 = d), h^l = φ(z^l).

* NNGP estimate: the readout layer is integrated exactly, so each network contributes
  W_std²·⟨h^depth(x), h^depth(x')⟩/n_depth + b_std², the covariance of its output given its hidden
  features; the estimate is the mean over networks.
* NTK estimate: ⟨∂f(x)/∂θ, ∂f(x')/∂θ⟩ for a scalar readout f, summed over every weight and bias:
  Σ_l ⟨g^{l+1}(x), g^{l+1}(x')⟩·(W_std²·⟨h^l(x), h^l(x')⟩/n_l + b_std²) + the readout term, with
  g^l = ∂f/∂z^l from the backward recursion g^l = φ'(z^l) ⊙ (W_std/√n_l)·W^lᵀ g^{l+1}.

With per-layer stds (a list/tuple of depth + 1), Dense layer l uses W_std,l and b_std,l in place of
W_std and b_std in every formula above (layer depth is the readout).

Both converge to the analytic kernels as width → ∞ ("Deep Neural Networks as Gaussian Processes",
Lee et al., ICLR 2018; "Neural Tangent Kernel", Jacot et al., NeurIPS 2018). The estimates are
detached (no gradients).
"""

from __future__ import annotations

import math
from collections.abc import Callable
from dataclasses import dataclass

import numpy as np
import torch
from torch import Tensor

from bayesact import activations as A
from bayesact.kernels._docs import args_section, document
from bayesact.kernels._quadrature import values_and_slopes
from bayesact.kernels.dual import DualActivation
from bayesact.kernels.recursion import (
    DEFAULT_BIAS_STD,
    DEFAULT_WEIGHT_STD,
    LayerStd,
    _check_depth,
    _check_inputs,
    _present,
    _variances,
)
from bayesact.kernels.resolve import ActivationLike, dual_activation

__all__ = ["empirical_nngp", "empirical_nngp_ntk", "empirical_ntk"]

#: the Args section of the three estimators (depth as for nngp)
_ARGS = args_section(
    "x1 x2 activation depth weight_std bias_std width n_networks seed networks_per_batch",
    x1="inputs (n, d).",
    x2="inputs (m, d); ``None`` means x1.",
    activation="as for :func:`bayesact.kernels.nngp` (a registry name runs the registry module).",
    weight_std=(
        "W_std (> 0), a float or a list/tuple of depth + 1 per-layer floats (entry l for Dense layer "
        "l: 0 the input layer, depth the readout)."
    ),
    bias_std="b_std (≥ 0, default 0.1 like ``nngp``), shared or per layer like ``weight_std``.",
    width="hidden width of every layer.",
    n_networks="number of independent networks averaged.",
    seed="seed of the weights' generator (same seed, same estimate).",
    networks_per_batch="networks drawn at once (default: about 128 MiB of weights).",
)


def _activation_function(activation: ActivationLike) -> Callable[[Tensor], Tensor]:
    dual_activation(activation)  # validates: elementwise, shared parameters
    if isinstance(activation, DualActivation):
        return activation.function
    if isinstance(activation, str):
        return A.get(activation, trainable=False).to(torch.float64)
    return activation


def network_seeds(seed: int, n_networks: int) -> list[int]:
    """Independent per-network seeds (numpy SeedSequence), so estimates do not depend on batching.

    Network i draws, in order, for each hidden layer W (fan_in × width) then β (1 × width), and for
    the NTK a readout (1 × width), from ``torch.Generator().manual_seed(network_seeds(seed, n)[i])``.
    """
    children = np.random.SeedSequence(seed).spawn(n_networks)
    return [int(c.generate_state(1, dtype=np.uint64)[0] >> 1) for c in children]


def _check_counts(width: int, n_networks: int, networks_per_batch: int | None) -> None:
    for name, value in (("width", width), ("n_networks", n_networks)):
        if isinstance(value, bool) or not isinstance(value, int) or value < 1:
            raise ValueError(f"{name} must be a positive integer, got {value!r}")
    if networks_per_batch is not None and (
        isinstance(networks_per_batch, bool)
        or not isinstance(networks_per_batch, int)
        or networks_per_batch < 1
    ):
        raise ValueError(f"networks_per_batch must be a positive integer, got {networks_per_batch!r}")


@dataclass(frozen=True)
class _MonteCarlo:
    """The options of the three estimators: the network family and the Monte Carlo budget."""

    activation: ActivationLike
    depth: int
    weight_std: LayerStd
    bias_std: LayerStd
    width: int
    n_networks: int
    seed: int
    networks_per_batch: int | None


@torch.no_grad()
def _empirical(
    x1: Tensor, x2: Tensor | None, mc: _MonteCarlo, with_ntk: bool
) -> tuple[Tensor, Tensor | None]:
    activation, depth, width, n_networks = mc.activation, mc.depth, mc.width, mc.n_networks
    networks_per_batch = mc.networks_per_batch
    _check_inputs(x1, x2, diag=False)
    _check_depth(depth)
    _check_counts(width, n_networks, networks_per_batch)
    for name, x in (("x1", x1), ("x2", x2)):
        if x is not None and x.dim() != 2:
            raise ValueError(f"{name} must have shape (n, d) for Monte Carlo, got {tuple(x.shape)}")
    phi = _activation_function(activation)
    w2, b2 = _variances(mc.weight_std, mc.bias_std, x1, depth)
    if any(v.dim() for v in (*w2, *b2)):
        raise ValueError("weight_std and bias_std must be scalars for Monte Carlo estimates")
    w, b = [v.sqrt() for v in w2], [v.sqrt() for v in b2]
    n1 = x1.shape[0]
    x = x1 if x2 is None else torch.cat([x1, x2], dim=0)
    dtype, device = x.dtype, x.device
    seeds = network_seeds(mc.seed, n_networks)
    if networks_per_batch is None:  # keep the stored weights near 128 MiB
        per_net = (x.shape[1] + max(depth - 1, 0) * width) * width * x.element_size()
        networks_per_batch = max(1, min(n_networks, (128 * 2**20) // max(per_net, 1)))

    def normal(generators: list[torch.Generator], *shape: int) -> Tensor:
        return torch.stack(
            [torch.randn(*shape, generator=g, dtype=dtype, device=device) for g in generators]
        )

    nngp_sum = torch.zeros(x.shape[0], x.shape[0], dtype=dtype, device=device)
    ntk_sum = torch.zeros_like(nngp_sum) if with_ntk else None
    done = 0
    while done < n_networks:
        batch = min(networks_per_batch, n_networks - done)
        gens = [torch.Generator(device=device).manual_seed(s) for s in seeds[done : done + batch]]
        h = x.expand(batch, *x.shape)
        inputs, weights = [h], []
        slopes: list[Tensor] = []
        for layer in range(depth):
            fan_in = h.shape[-1]
            weight = normal(gens, fan_in, width)
            z = (w[layer] / math.sqrt(fan_in)) * (h @ weight) + b[layer] * normal(gens, 1, width)
            h, slope = values_and_slopes(phi, z, with_ntk)
            inputs.append(h)
            if slope is not None:  # with_ntk
                slopes.append(slope)
            weights.append(weight)
        gram = w2[depth] * (h @ h.transpose(-1, -2)) / h.shape[-1] + b2[depth]
        nngp_sum += gram.sum(0)
        if ntk_sum is not None:  # with_ntk
            theta = gram.clone()
            if depth:
                readout = normal(gens, 1, h.shape[-1])
                g = (w[depth] / math.sqrt(h.shape[-1])) * readout * slopes[-1]
                for layer in range(depth - 1, -1, -1):
                    h_in = inputs[layer]
                    theta += (g @ g.transpose(-1, -2)) * (
                        w2[layer] * (h_in @ h_in.transpose(-1, -2)) / h_in.shape[-1] + b2[layer]
                    )
                    if layer:
                        back = (w[layer] / math.sqrt(h_in.shape[-1])) * (
                            g @ weights[layer].transpose(-1, -2)
                        )
                        g = slopes[layer - 1] * back
            ntk_sum += theta.sum(0)
        done += batch
    nngp_mean = nngp_sum / n_networks
    ntk_mean = None if ntk_sum is None else ntk_sum / n_networks
    if x2 is not None:
        nngp_mean = nngp_mean[:n1, n1:]
        ntk_mean = None if ntk_mean is None else ntk_mean[:n1, n1:]
    return nngp_mean, ntk_mean


@document(args=_ARGS)
def empirical_nngp(
    x1: Tensor,
    x2: Tensor | None = None,
    *,
    activation: ActivationLike,
    depth: int,
    weight_std: LayerStd = DEFAULT_WEIGHT_STD,
    bias_std: LayerStd = DEFAULT_BIAS_STD,
    width: int = 512,
    n_networks: int = 200,
    seed: int = 0,
    networks_per_batch: int | None = None,
) -> Tensor:
    """Monte Carlo NNGP: the mean output covariance of ``n_networks`` random finite networks.

    Each network contributes W_std²·⟨h(x), h(x')⟩/width + b_std² from its last hidden features h
    (the readout layer integrated exactly). Converges to :func:`bayesact.kernels.nngp` as width and
    n_networks grow ("Deep Neural Networks as Gaussian Processes", Lee et al., ICLR 2018).

    Args:
        {args}

    Returns:
        Tensor (n, m), detached.
    """
    mc = _MonteCarlo(activation, depth, weight_std, bias_std, width, n_networks, seed, networks_per_batch)
    return _empirical(x1, x2, mc, with_ntk=False)[0]


@document(args=_ARGS)
def empirical_ntk(
    x1: Tensor,
    x2: Tensor | None = None,
    *,
    activation: ActivationLike,
    depth: int,
    weight_std: LayerStd = DEFAULT_WEIGHT_STD,
    bias_std: LayerStd = DEFAULT_BIAS_STD,
    width: int = 512,
    n_networks: int = 200,
    seed: int = 0,
    networks_per_batch: int | None = None,
) -> Tensor:
    """Monte Carlo NTK: the mean of ⟨∂f(x)/∂θ, ∂f(x')/∂θ⟩ over random finite networks.

    f is the scalar output of the NTK-parameterized network, θ all its weights and biases; the
    gradients come from an explicit backward recursion, vectorised over networks. Converges to
    :func:`bayesact.kernels.ntk` ("Neural Tangent Kernel", Jacot, Gabriel & Hongler, NeurIPS 2018).

    Args:
        {args}

    Returns:
        Tensor (n, m), detached.
    """
    mc = _MonteCarlo(activation, depth, weight_std, bias_std, width, n_networks, seed, networks_per_batch)
    return _present(_empirical(x1, x2, mc, with_ntk=True)[1])


@document(args=_ARGS)
def empirical_nngp_ntk(
    x1: Tensor,
    x2: Tensor | None = None,
    *,
    activation: ActivationLike,
    depth: int,
    weight_std: LayerStd = DEFAULT_WEIGHT_STD,
    bias_std: LayerStd = DEFAULT_BIAS_STD,
    width: int = 512,
    n_networks: int = 200,
    seed: int = 0,
    networks_per_batch: int | None = None,
) -> tuple[Tensor, Tensor]:
    """Both Monte Carlo estimates from the same networks (see ``empirical_nngp``/``empirical_ntk``).

    Args:
        {args}

    Returns:
        (nngp, ntk), each (n, m), detached.
    """
    mc = _MonteCarlo(activation, depth, weight_std, bias_std, width, n_networks, seed, networks_per_batch)
    k, theta = _empirical(x1, x2, mc, with_ntk=True)
    return k, _present(theta)
