"""Stochastic variational inference with Pyro's autoguides, and a result with ArviZ output."""

from __future__ import annotations

import math
from collections.abc import Callable
from typing import Any

import pyro
import pyro.poutine as poutine
import torch
from pyro.infer import SVI, Trace_ELBO
from pyro.infer.autoguide import AutoIAFNormal, AutoLowRankMultivariateNormal, AutoNormal
from tqdm.auto import tqdm

from bayesact.infer.arguments import check_model, check_seed, keyword_options, place_arguments, run_context
from bayesact.infer.phases import show_progress
from bayesact.infer.posterior import Posterior
from bayesact.infer.potential import trace_model
from bayesact.infer.sites import is_deterministic, site_dist, site_value

__all__ = ["SVIResult", "svi"]

_GUIDES: dict[str, Callable[[Callable[..., Any]], Any]] = {
    "normal": AutoNormal,
    "lowrank": AutoLowRankMultivariateNormal,
    "iaf": AutoIAFNormal,
}


class SVIResult:
    """The fitted guide, the loss history and draws from the approximate posterior.

    Attributes:
        losses: ELBO loss (negative ELBO estimate) at every step.
        guide: the fitted Pyro guide.
    """

    def __init__(
        self, model: Callable[..., Any], guide: Any, args: tuple, kwargs: dict, losses: list[float]
    ) -> None:
        self.model = model
        self.guide = guide
        self.args = args
        self.kwargs = kwargs
        self.losses = losses
        tr = trace_model(model, args, kwargs)
        self.latent_sites = [
            name for name, site in tr.nodes.items()
            if site["type"] == "sample" and not site["is_observed"]
        ]

    def sample_posterior(self, num_samples: int, seed: int | None = None) -> dict[str, torch.Tensor]:
        """``num_samples`` draws of every latent site from the guide, shaped (num_samples, ...)."""
        if isinstance(num_samples, bool) or not isinstance(num_samples, int) or num_samples < 1:
            raise ValueError(f"num_samples must be an integer >= 1, got {num_samples!r}")
        draws: dict[str, list[torch.Tensor]] = {name: [] for name in self.latent_sites}
        with torch.random.fork_rng(devices=[]), torch.no_grad():
            if seed is not None:
                torch.manual_seed(seed)
            for _ in range(num_samples):
                tr = poutine.trace(self.guide).get_trace(*self.args, **self.kwargs)
                for name in self.latent_sites:
                    draws[name].append(tr.nodes[name]["value"].detach())
        return {name: torch.stack(values) for name, values in draws.items()}

    def to_posterior(self, num_samples: int = 1000, seed: int | None = None) -> Posterior:
        """``num_samples`` guide draws as a one-chain :class:`~bayesact.infer.Posterior`, so an
        SVI fit works downstream like an MCMC run: ``pyro.deterministic`` sites, the pointwise
        ``log_likelihood`` (``az.loo``, ``az.compare``), ``observed_data``,
        :func:`~bayesact.infer.predictive`, ``summary`` and ``save``. ``sample_stats`` is empty
        (guide draws are independent); ``info`` says ``engine="svi"``.
        """
        samples = {k: v.unsqueeze(0) for k, v in self.sample_posterior(num_samples, seed).items()}
        with torch.random.fork_rng(devices=[]):
            tr = trace_model(self.model, self.args, self.kwargs)
        observed = {
            name: site_value(site) for name, site in tr.nodes.items()
            if site["type"] == "sample" and site["is_observed"] and not is_deterministic(site)
        }
        info = {
            "engine": "svi",
            "guide": type(self.guide).__name__,
            "num_steps": len(self.losses),
            "final_loss": self.losses[-1] if self.losses else math.nan,
            "num_samples": num_samples,
            "seed": seed,
        }
        post = Posterior(samples, {}, model=self.model, args=self.args, kwargs=self.kwargs,
                         observed=observed, info=info)
        post.add_deterministic_sites()
        return post

    def to_arviz(
        self,
        num_samples: int = 1000,
        seed: int | None = None,
        coords: dict[str, Any] | None = None,
        dims: dict[str, list[str]] | None = None,
    ) -> Any:
        """ArviZ object of :meth:`to_posterior`: guide draws as one chain with their
        deterministic sites, ``log_likelihood`` and ``observed_data`` (``coords`` and ``dims``
        as in :meth:`Posterior.to_arviz <bayesact.infer.Posterior.to_arviz>`)."""
        return self.to_posterior(num_samples, seed).to_arviz(coords=coords, dims=dims)


def _non_finite_site(model: Callable, guide: Any, args: tuple, kwargs: dict) -> str | None:
    """Name the first site whose value or log-density is not finite (guide, then model)."""
    with torch.no_grad():
        try:
            guide_tr = poutine.trace(guide).get_trace(*args, **kwargs)
            model_tr = poutine.trace(poutine.replay(model, trace=guide_tr)).get_trace(*args, **kwargs)
        except Exception as exc:  # a model that fails here fails for the same reason
            return f"(tracing failed: {exc!r})"
        for where, tr in (("guide", guide_tr), ("model", model_tr)):
            for name, site in tr.nodes.items():
                if site["type"] != "sample":
                    continue
                value = site["value"]
                if isinstance(value, torch.Tensor) and not bool(torch.isfinite(value).all()):
                    return f"{where} site '{name}' (value)"
                lp = site_dist(site).log_prob(value)
                if not bool(torch.isfinite(lp).all()):
                    return f"{where} site '{name}' (log_prob)"
    return None


def svi(
    model: Callable[..., Any],
    *args: Any,
    guide: str | Callable[..., Any] = "normal",
    num_steps: int = 1000,
    lr: float = 1e-2,
    num_particles: int = 1,
    optimizer: Any = None,
    progress: bool = True,
    device: str | torch.device | None = None,
    dtype: torch.dtype | None = None,
    seed: int | None = None,
    model_kwargs: dict[str, Any] | None = None,
    **kwargs: Any,
) -> SVIResult:
    """Fit a variational posterior by maximising the ELBO (Kingma & Welling 2014; Ranganath
    et al. 2014): ELBO(φ) = E_q[log p(x, z) - log q_φ(z)], estimated with ``num_particles``
    reparameterised samples per step (Pyro's ``Trace_ELBO``).

    The model is called as ``model(*args, **kwargs)``: keyword arguments that are not options
    below go to the model (as in Pyro's ``SVI.step``).

    Args:
        model: a Pyro model.
        *args: model arguments (floating tensors are moved to ``device`` and ``dtype``).
        guide: ``"normal"`` (mean-field, ``AutoNormal``), ``"lowrank"``
            (``AutoLowRankMultivariateNormal``), ``"iaf"`` (``AutoIAFNormal``, Kingma et al.
            2016) or a Pyro guide callable.
        num_steps: optimisation steps.
        lr: learning rate of the default Adam optimiser.
        num_particles: ELBO samples per step.
        optimizer: a ``pyro.optim`` optimiser (overrides ``lr``).
        progress: tqdm bar with the loss (only when stderr is a terminal or a notebook).
        device: device of the run (default: that of the model's tensor arguments).
        dtype: floating type of the run (default: that of the first floating tensor argument);
            as in :func:`~bayesact.infer.mcmc`, an ``nn.Module`` model is cast in place and the
            model and guide run with ``dtype`` as torch's default type (the guide's parameters
            get that dtype).
        seed: seeds Pyro's global random streams (``pyro.set_rng_seed``).
        model_kwargs: keyword arguments of the model given as a dict (for names that clash
            with the options above); merged with ``**kwargs``.
        **kwargs: keyword arguments of the model.

    Returns:
        An :class:`SVIResult`. Pyro's global parameter store is cleared first.

    Raises:
        FloatingPointError: the loss became NaN or infinite (or Pyro's validation found a NaN
            parameter); names the step and, when it can, the site whose value or log-density
            is not finite.
    """
    for name, value in (("num_steps", num_steps), ("num_particles", num_particles)):
        if isinstance(value, bool) or not isinstance(value, int) or value < 1:
            raise ValueError(f"{name} must be an integer >= 1, got {value!r}")
    if not (isinstance(lr, int | float) and math.isfinite(lr) and lr > 0):
        raise ValueError(f"lr must be a positive finite number, got {lr!r}")
    kwargs = check_model("svi", model, model_kwargs, kwargs, SVI_OPTIONS)
    seed = check_seed(seed)
    args, kwargs, dev, dt = place_arguments(args, kwargs, device, dtype, model)
    with run_context(model, dt, dev):
        return _fit(model, args, kwargs, guide, num_steps, lr, num_particles, optimizer, progress, seed)


def _fit(
    model: Callable[..., Any], args: tuple, kwargs: dict, guide: str | Callable[..., Any], num_steps: int,
    lr: float, num_particles: int, optimizer: Any, progress: bool, seed: int | None,
) -> SVIResult:
    if seed is not None:
        pyro.set_rng_seed(seed)
    tr = trace_model(model, args, kwargs)
    if not any(s["type"] == "sample" and not s["is_observed"] for s in tr.nodes.values()):
        raise ValueError("model has no latent sample sites: nothing to infer")
    if isinstance(guide, str):
        if guide not in _GUIDES:
            raise ValueError(f"guide must be one of {sorted(_GUIDES)} or a callable, got {guide!r}")
        guide_fn = _GUIDES[guide](model)
    elif callable(guide):
        guide_fn = guide
    else:
        raise ValueError(f"guide must be a string or a callable, got {type(guide).__name__}")
    pyro.clear_param_store()
    optim = optimizer if optimizer is not None else pyro.optim.Adam({"lr": lr})  # type: ignore[attr-defined]
    engine = SVI(model, guide_fn, optim, loss=Trace_ELBO(num_particles=num_particles))
    losses: list[float] = []
    bar = tqdm(range(num_steps), desc="svi", disable=not show_progress(progress), dynamic_ncols=True)
    try:
        for step in bar:
            try:
                loss = float(engine.step(*args, **kwargs))
            except ValueError as exc:  # Pyro's validation caught a NaN/invalid parameter
                if "invalid values" not in str(exc) and "nan" not in str(exc).lower():
                    raise
                raise FloatingPointError(f"SVI failed at step {step}: {exc}") from exc
            if not math.isfinite(loss):
                site = _non_finite_site(model, guide_fn, args, kwargs)
                where = f" at {site}" if site else ""
                raise FloatingPointError(f"SVI loss is {loss} at step {step}{where}")
            losses.append(loss)
            if progress and step % 50 == 0:
                bar.set_postfix(loss=f"{loss:.4g}", refresh=False)
    except KeyboardInterrupt:
        pass  # keep the guide fitted so far
    finally:
        bar.close()
    return SVIResult(model, guide_fn, args, kwargs, losses)


SVI_OPTIONS = keyword_options(svi)
