"""Posterior predictive sampling for a :class:`~bayesact.infer.Posterior` (or an SVI fit)."""

from __future__ import annotations

from collections.abc import Callable
from typing import Any

import torch

from bayesact.infer.arguments import move_arguments, resolve_device_dtype, run_context, split_model_kwargs
from bayesact.infer.posterior import Posterior
from bayesact.infer.potential import trace_model
from bayesact.infer.replay import replay_sites

__all__ = ["predictive"]


def _check_sites(model: Callable[..., Any], posterior: Posterior, nodes: dict[str, Any]) -> set[str]:
    """The model's deterministic sites; refuses a posterior whose latent sites are not the model's."""
    derived = {name for name, site in nodes.items() if site.get("infer", {}).get("_deterministic")}
    latent = {  # an observed site given obs=None (predictions) is not latent
        name for name, site in nodes.items()
        if site["type"] == "sample" and not site["is_observed"] and name not in posterior.observed
    }
    have = set(posterior.samples) - derived
    missing, extra = sorted(latent - have), sorted(have - latent)
    if missing or extra:
        parts = []
        if missing:
            parts.append(f"the model's latent site(s) {missing} are missing from the posterior")
        if extra:
            parts.append(f"the posterior's site(s) {extra} are not latent or deterministic in the model")
        name = getattr(model, "__qualname__", type(model).__name__)
        raise ValueError(
            f"posterior does not match model '{name}': " + "; ".join(parts)
            + " (was it sampled from another model?)"
        )
    return derived


def predictive(
    model: Callable[..., Any],
    posterior: Any,
    *args: Any,
    seed: int | None = None,
    model_kwargs: dict[str, Any] | None = None,
    num_samples: int = 1000,
    **kwargs: Any,
) -> dict[str, torch.Tensor]:
    """Draw y_rep ~ p(y | θ) once for every posterior draw θ (posterior predictive).

    The model runs conditioned on each draw's latent values, in the dtype and on the device of
    the posterior's draws (as the run did: see :func:`~bayesact.infer.mcmc`'s ``dtype``); its
    observed sites are sampled from their likelihood (whatever ``obs`` the model is given),
    so ``args`` may hold new inputs (predictions) or the training inputs (posterior
    predictive checks). Draws are batched with ``torch.func.vmap`` where the model allows it.

    Args:
        model: the Pyro model that was sampled (its latent sites must be the posterior's).
        posterior: its :class:`Posterior`, or an :class:`~bayesact.infer.SVIResult`, whose
            guide is sampled first (``SVIResult.to_posterior(num_samples, seed)``).
        *args: model arguments (default: those of the run).
        seed: seed of torch's global random stream for these draws.
        model_kwargs: keyword arguments of the model as a dict (for names that clash with
            this function's options).
        num_samples: guide draws when ``posterior`` is an ``SVIResult``.
        **kwargs: keyword arguments of the model, as in ``pyro.infer.Predictive``. Without
            any (and without ``model_kwargs``) the run's are used.

    Returns:
        Site name -> samples shaped (chain, draw, ...) for every observed site (a fresh
        y_rep) and every ``pyro.deterministic`` site (e.g. a BNN's network outputs ``f`` at the
        new inputs); plate index sites are not included. They are also stored in
        ``posterior.posterior_predictive`` and so appear in ``posterior.to_arviz()``, where
        ArviZ computes R-hat and ESS on them. For an ``SVIResult`` call
        ``post = result.to_posterior(...)`` first to keep them.

    Raises:
        ValueError: the posterior has no draws, or its latent sites are not the model's
            (names the missing and extra sites).
    """
    from bayesact.infer.svi import SVIResult

    if isinstance(posterior, SVIResult):
        posterior = posterior.to_posterior(num_samples, seed)
    if not isinstance(posterior, Posterior):
        raise TypeError(
            "posterior must be a bayesact.infer.Posterior or SVIResult, "
            f"got {type(posterior).__name__}"
        )
    if posterior.num_draws == 0:
        raise ValueError("posterior has no draws")
    if not args:
        args = posterior.args
    if model_kwargs is None and not kwargs:
        kwargs = posterior.kwargs
    else:
        options = ("seed", "model_kwargs", "num_samples")
        kwargs = split_model_kwargs("predictive", model, model_kwargs, kwargs, options)
    floats = tuple(v for v in posterior.samples.values() if v.is_floating_point())
    device, dtype = resolve_device_dtype(floats, {}, None, None)  # those of the draws
    args, kwargs = move_arguments(args, kwargs, device, dtype)
    with torch.random.fork_rng(devices=[]), run_context(model, dtype, device):
        if seed is not None:
            torch.manual_seed(seed)
        # deterministic sites are recomputed at the new inputs, not conditioned on
        derived = _check_sites(model, posterior, trace_model(model, args, kwargs).nodes)
        latent = {k: v for k, v in posterior.samples.items() if k not in derived}
        sites = replay_sites(model, args, kwargs, latent, sample_observed=True)
    out = {**sites["deterministic"], **sites["predictive"]}
    posterior.posterior_predictive.update(out)
    return out
