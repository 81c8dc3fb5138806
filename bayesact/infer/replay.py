"""Re-run a Pyro model at posterior draws: pointwise log-likelihood, deterministic sites,
posterior predictive samples. Draws are batched with ``torch.func.vmap`` in chunks, with a
per-draw loop as the fallback for models that ``vmap`` cannot batch."""

from __future__ import annotations

import warnings
from collections.abc import Callable
from typing import Any

import pyro
import pyro.poutine as poutine
import torch
from pyro.poutine.util import site_is_subsample

from bayesact.infer.sites import site_dist, site_infer, site_value

__all__ = ["replay_sites"]


def _one_draw(
    model: Callable[..., Any],
    args: tuple,
    kwargs: dict,
    values: dict[str, torch.Tensor],
    sample_observed: bool,
) -> dict[str, torch.Tensor]:
    inner = poutine.uncondition(model) if sample_observed else model
    tr = poutine.trace(poutine.condition(inner, data=values)).get_trace(*args, **kwargs)
    out: dict[str, torch.Tensor] = {}
    for name, site in tr.nodes.items():
        if site["type"] != "sample" or name in values or site_is_subsample(site):
            continue  # plate index sites are not model outputs (as in Pyro's Predictive)
        infer = site_infer(site)
        if infer.get("_deterministic", False):
            out[f"deterministic:{name}"] = site_value(site)
        elif sample_observed and (infer.get("was_observed", False) or not site["is_observed"]):
            out[f"predictive:{name}"] = site_value(site)  # observed, or given obs=None
        elif site["is_observed"]:
            out[f"log_likelihood:{name}"] = site_dist(site).log_prob(site_value(site))
    return out


def replay_sites(
    model: Callable[..., Any],
    args: tuple,
    kwargs: dict,
    samples: dict[str, torch.Tensor],
    *,
    sample_observed: bool = False,
    chunk_size: int = 256,
) -> dict[str, dict[str, torch.Tensor]]:
    """Run ``model`` conditioned on each draw of ``samples`` (shaped (chain, draw, ...)).

    Returns ``{"log_likelihood": ..., "deterministic": ..., "predictive": ...}``, each a dict
    of site tensors shaped (chain, draw, ...). With ``sample_observed`` the observed sites are
    drawn from their likelihood (posterior predictive) instead of scored.
    """
    first = next(iter(samples.values()))
    chains, draws = first.shape[:2]
    flat = {k: v.reshape(chains * draws, *v.shape[2:]) for k, v in samples.items()}
    total = chains * draws
    results: dict[str, list[torch.Tensor]] = {}

    def one(values: dict[str, torch.Tensor]) -> dict[str, torch.Tensor]:
        return _one_draw(model, args, kwargs, values, sample_observed)

    with pyro.validation_enabled(False), torch.no_grad(), warnings.catch_warnings():
        warnings.simplefilter("ignore", category=UserWarning)
        batched = torch.func.vmap(one, randomness="different")
        use_vmap = total > 0
        for start in range(0, total, chunk_size):
            chunk = {k: v[start : start + chunk_size] for k, v in flat.items()}
            out = None
            if use_vmap:
                try:
                    out = batched(chunk)
                except Exception:
                    use_vmap = False
            if out is None:
                n = next(iter(chunk.values())).shape[0]
                per = [one({k: v[i] for k, v in chunk.items()}) for i in range(n)]
                out = {k: torch.stack([p[k] for p in per]) for k in per[0]} if per else {}
            for k, v in out.items():
                results.setdefault(k, []).append(v)
    grouped: dict[str, dict[str, torch.Tensor]] = {
        "log_likelihood": {},
        "deterministic": {},
        "predictive": {},
    }
    for key, parts in results.items():
        group, name = key.split(":", 1)
        value = torch.cat(parts)
        grouped[group][name] = value.reshape(chains, draws, *value.shape[1:])
    return grouped
