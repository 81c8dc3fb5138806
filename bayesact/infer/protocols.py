"""Hooks a model may implement for the samplers, as typed protocols checked structurally.

They live where they are consumed: ``bayesact.infer`` imports no other bayesact package, and models
(or their priors) satisfy them by having the members, without importing this module.
"""

from __future__ import annotations

from typing import Protocol, runtime_checkable

from torch import Tensor

__all__ = ["GibbsHook"]


@runtime_checkable
class GibbsHook(Protocol):
    """Latent sites that SGHMC redraws from their full conditionals instead of moving them.

    :func:`bayesact.infer.sghmc` holds the sites named by ``gibbs_sites`` out of the gradient dynamics
    and every ``gibbs_every`` steps replaces them by ``gibbs_update(values)``. ``values`` maps every
    latent site name to its current value in constrained space with a leading chain dimension
    ``(num_chains, *site_shape)``; the returned dict maps each name of ``gibbs_sites`` to its new value,
    of shape ``(num_chains, *site_shape)`` or broadcastable to it. Randomness must come from torch's
    global generator (the sampler seeds it for each update). An empty ``gibbs_sites`` means no Gibbs
    step. ``bayesact.models.BNN`` implements it by delegating to its weight prior (the per-layer
    variances of a ``HierarchicalPrior``).
    """

    @property
    def gibbs_sites(self) -> tuple[str, ...]:
        """Names of the latent sites redrawn by :meth:`gibbs_update`."""
        ...

    def gibbs_update(self, values: dict[str, Tensor]) -> dict[str, Tensor]:
        """New values of the :attr:`gibbs_sites`, drawn given ``values`` (all latent sites)."""
        ...
