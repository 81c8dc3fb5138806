"""Posterior predictive sampling for a :class:`~bayesact.infer.Posterior`."""

from __future__ import annotations

from collections.abc import Callable
from typing import Any

import torch
from pyro import poutine

from bayesact.infer.posterior import Posterior
from bayesact.infer.replay import replay_sites

__all__ = ["predictive"]


def predictive(
    model: Callable[..., Any],
    posterior: Posterior,
    *args: Any,
    seed: int | None = None,
    model_kwargs: dict[str, Any] | None = None,
) -> dict[str, torch.Tensor]:
    """Draw y_rep ~ p(y | θ) once for every posterior draw θ (posterior predictive).

    The model runs conditioned on each draw's latent values; its observed sites are sampled
    from their likelihood (whatever ``obs`` the model is given), so ``args`` may hold new
    inputs (predictions) or the training inputs (posterior predictive checks). Draws are
    batched with ``torch.func.vmap`` where the model allows it.

    Args:
        model: the Pyro model that was sampled.
        posterior: its :class:`Posterior`.
        *args: model arguments (default: those of the MCMC run).
        seed: seed of torch's global random stream for these draws.
        model_kwargs: keyword arguments of the model (default: those of the MCMC run).

    Returns:
        Site name -> samples shaped (chain, draw, ...) for every observed site (a fresh
        y_rep) and every ``pyro.deterministic`` site (e.g. a BNN's network outputs ``f`` at the
        new inputs). They are also stored in ``posterior.posterior_predictive`` and so appear in
        ``posterior.to_arviz()``, where ArviZ computes R-hat and ESS on them.
    """
    if not isinstance(posterior, Posterior):
        raise TypeError(f"posterior must be a bayesact.infer.Posterior, got {type(posterior).__name__}")
    if posterior.num_draws == 0:
        raise ValueError("posterior has no draws")
    if not args:
        args = posterior.args
    kwargs = posterior.kwargs if model_kwargs is None else model_kwargs
    with torch.random.fork_rng(devices=[]):
        if seed is not None:
            torch.manual_seed(seed)
        # deterministic sites are recomputed at the new inputs, not conditioned on
        nodes = poutine.trace(model).get_trace(*args, **kwargs).nodes
        derived = {name for name, site in nodes.items() if site.get("infer", {}).get("_deterministic")}
        latent = {k: v for k, v in posterior.samples.items() if k not in derived}
        sites = replay_sites(model, args, kwargs, latent, sample_observed=True)
    out = {**sites["deterministic"], **sites["predictive"]}
    posterior.posterior_predictive.update(out)
    return out
