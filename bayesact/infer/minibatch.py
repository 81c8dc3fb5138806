"""Minibatch potentials: an unbiased estimate of U(z) and ∇U(z) from B of N data points.

The positional tensor arguments of the model whose first dimension equals N (the length of
the first positional tensor argument) are the *data*: every step takes the same B rows of
each. Observed sites whose value depends on the data (found by tracing the model on a
minibatch) have their log-likelihood multiplied by N/B inside the potential, so that

    Ũ(z) = -log p(θ) - log|J| - (N/B) Σ_{i∈batch} log p(y_i | θ, x_i)

has E[Ũ] = U over uniformly drawn batches (Welling & Teh 2011; Chen, Fox & Guestrin 2014).
The model needs no ``total_size`` argument. The gradient is the engine's batched (vmapped,
graph-captured) gradient with the minibatch as a graph *input*, so one captured graph serves
every minibatch of the same size. Each chain draws its own minibatch when the model can be
vmapped over its data; models with data-dependent Python checks (``bool(x.isfinite().all())``)
fall back to one minibatch shared by all chains.
"""

from __future__ import annotations

from collections.abc import Callable
from typing import Any

import torch

from bayesact.infer.potential import Potential, trace_model
from bayesact.infer.sites import is_deterministic, site_value

__all__ = ["MinibatchPotential", "data_positions"]


def data_positions(args: tuple) -> tuple[tuple[int, ...], int]:
    """Positions of the minibatched arguments and N (the first positional tensor's length).

    Raises:
        ValueError: no positional tensor argument with a leading dimension (``args``).
    """
    tensors = [(i, a) for i, a in enumerate(args) if isinstance(a, torch.Tensor) and a.dim() >= 1]
    if not tensors:
        raise ValueError(
            "args: sghmc minibatches the model's positional tensor arguments (x, y, ...) along "
            "their first dimension, but the model was given none"
        )
    n = int(tensors[0][1].shape[0])
    return tuple(i for i, a in tensors if int(a.shape[0]) == n), n


def _scaled_sites(
    model: Callable[..., Any], args: tuple, kwargs: dict, positions: tuple[int, ...], batch_size: int
) -> frozenset[str]:
    """Observed sites whose value changes shape when the data args shrink to ``batch_size`` rows;
    checks that no latent site does (local latent variables cannot be minibatched this way)."""
    full = trace_model(model, args, kwargs)
    small = list(args)
    rows = max(1, min(batch_size, int(args[positions[0]].shape[0]) - 1))
    for p in positions:
        small[p] = args[p][:rows]
    part = trace_model(model, tuple(small), kwargs)
    scaled = set()
    for name, site in full.nodes.items():
        if site["type"] != "sample" or is_deterministic(site):
            continue
        other = part.nodes.get(name)
        changed = other is None or site_value(other).shape != site_value(site).shape
        if site["is_observed"] and changed:
            scaled.add(name)
        elif not site["is_observed"] and changed:
            raise ValueError(
                f"latent site '{name}' changes shape with the minibatched data: sghmc needs "
                "global latent variables (no per-data-point latents)"
            )
    if not scaled:
        raise ValueError(
            "args: no observed site depends on the minibatched arguments (positions "
            f"{list(positions)}); pass the data (x, y, ...) as positional tensors"
        )
    return frozenset(scaled)


class MinibatchPotential:
    """Ũ(z) and ∇Ũ(z) on minibatches of the model's data arguments, batched over chains.

    Args:
        model: the Pyro model.
        args: positional model arguments (on the target device and dtype).
        kwargs: keyword model arguments.
        batch_size: rows per minibatch B (1 <= B <= N).
        num_chains: number of chains C.
        dtype: floating type.
        device: device.
        capture: capture the vmapped gradient as a graph (see :class:`Potential`).

    Attributes:
        potential: the underlying :class:`~bayesact.infer.potential.Potential` (sites,
            transforms, flat vectors).
        positions: indices of the minibatched positional arguments.
        num_data: N.
        per_chain: whether every chain draws its own minibatch.
    """

    def __init__(
        self,
        model: Callable[..., Any],
        args: tuple,
        kwargs: dict,
        batch_size: int,
        num_chains: int,
        dtype: torch.dtype,
        device: torch.device,
        capture: bool = True,
    ) -> None:
        self.positions, self.num_data = data_positions(args)
        if isinstance(batch_size, bool) or not isinstance(batch_size, int) or not (
            1 <= batch_size <= self.num_data
        ):
            raise ValueError(
                f"batch_size must be an integer in [1, N = {self.num_data}] (N = rows of the "
                f"first positional tensor argument), got {batch_size!r}"
            )
        self.batch_size = batch_size
        self.num_chains = num_chains
        self.data = tuple(args[p] for p in self.positions)
        scale = self.num_data / batch_size
        scaled = _scaled_sites(model, args, kwargs, self.positions, batch_size) if scale != 1 else frozenset()
        self.potential: Potential
        self.per_chain = True
        for per_chain in (True, False):
            pot = Potential(model, args, kwargs, dtype, device, data_positions=self.positions,
                            scaled_sites=scaled, likelihood_scale=scale, batched_data=per_chain)
            example = self.batch(torch.arange(batch_size, device=device).expand(
                *((num_chains,) if per_chain else ()), batch_size))
            mode = pot.prepare(num_chains, capture=capture, example_data=example)
            self.potential, self.per_chain = pot, per_chain
            if mode != "loop":
                break

    @property
    def mode(self) -> str:
        return self.potential.mode

    def draw_indices(self, generator: torch.Generator) -> torch.Tensor:
        """Uniform rows without replacement: (C, B) per chain, or (B,) shared."""
        shape = (self.num_chains, self.num_data) if self.per_chain else (self.num_data,)
        keys = torch.rand(shape, generator=generator, device=generator.device)
        return keys.topk(self.batch_size, dim=-1, sorted=False).indices

    def batch(self, indices: torch.Tensor) -> tuple[torch.Tensor, ...]:
        """The data arguments at ``indices`` ((C, B) or (B,))."""
        return tuple(d[indices] for d in self.data)

    def value_and_grad(self, z: torch.Tensor, indices: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor]:
        """(Ũ (C,), ∇Ũ (C, D)) at ``z`` (C, D) on the minibatch ``indices``."""
        return self.potential.value_and_grad(z, *self.batch(indices))
