"""``engine="pyro"``: the same model and settings through ``pyro.infer.MCMC``, for comparison."""

from __future__ import annotations

import time
import warnings
from collections.abc import Callable
from typing import Any

import pyro
import torch
from pyro.infer import HMC, MCMC, NUTS
from pyro.infer.autoguide.initialization import init_to_uniform, init_to_value

from bayesact.infer.posterior import Posterior
from bayesact.infer.potential import trace_model
from bayesact.infer.sites import is_deterministic, site_dist, site_value

__all__ = ["run_pyro_mcmc"]


class _StageTimer:
    """``hook_fn`` for ``pyro.infer.MCMC``: wall time spent in warmup and in sampling."""

    def __init__(self) -> None:
        self.last = time.perf_counter()
        self.seconds = {"Warmup": 0.0, "Sample": 0.0}

    def __call__(self, kernel: Any, params: Any, stage: str, i: int) -> None:
        now = time.perf_counter()
        self.seconds[stage] = self.seconds.get(stage, 0.0) + now - self.last
        self.last = now


def _check_continuous_latents(model: Callable[..., Any], args: tuple, kwargs: dict) -> None:
    tr = trace_model(model, args, kwargs)
    latent = {
        name: site_dist(site).support.is_discrete for name, site in tr.nodes.items()
        if site["type"] == "sample" and not site["is_observed"]
    }
    if not latent:
        raise ValueError("model has no latent sample sites: nothing to sample")
    if all(latent.values()):
        raise ValueError(
            f"engine='pyro': every latent site of the model is discrete ({sorted(latent)}); Pyro's "
            "NUTS/HMC sums discrete sites out by enumeration and samples only continuous ones, so "
            "there is nothing to sample. Use pyro.infer.infer_discrete or enumerate the model exactly"
        )


def run_pyro_mcmc(
    model: Callable[..., Any],
    args: tuple,
    kwargs: dict,
    *,
    method: str,
    num_chains: int,
    num_warmup: int,
    num_samples: int,
    seed: int,
    target_accept: float,
    max_tree_depth: int,
    dense_mass: bool,
    num_steps: int | None,
    step_size: float | None,
    init: Any,
    progress: bool,
    trajectory_length: float,
    jit_compile: bool,
    adapt_step_size: bool = True,
    adapt_mass_matrix: bool = True,
) -> Posterior:
    """Run ``pyro.infer.MCMC`` with NUTS or HMC and wrap the draws in a :class:`Posterior`.

    Pyro exposes per-draw divergences but not tree depth or energy, so ``sample_stats`` holds
    ``diverging`` only. Chains run in separate processes when Pyro has enough CPUs for them,
    otherwise one after another (Pyro's own rule).

    Raises:
        ValueError: the model has no continuous latent site (Pyro enumerates discrete sites
            away and would return an empty posterior).
    """
    _check_continuous_latents(model, args, kwargs)
    pyro.set_rng_seed(seed)
    strategy = init_to_value(values=init) if isinstance(init, dict) else init_to_uniform
    common: dict[str, Any] = dict(
        step_size=step_size or 1.0, adapt_step_size=adapt_step_size, adapt_mass_matrix=adapt_mass_matrix,
        full_mass=dense_mass, target_accept_prob=target_accept, jit_compile=jit_compile,
        ignore_jit_warnings=True, init_strategy=strategy,
    )
    kernel: HMC
    if method == "nuts":
        kernel = NUTS(model, max_tree_depth=max_tree_depth, **common)
    else:
        kernel = HMC(model, num_steps=num_steps, trajectory_length=trajectory_length, **common)
    timer = _StageTimer()
    runner = MCMC(
        kernel, num_samples=num_samples, warmup_steps=num_warmup, num_chains=num_chains,
        disable_progbar=not progress, hook_fn=timer if num_chains == 1 else None,
    )
    t0 = time.perf_counter()
    with warnings.catch_warnings():
        warnings.simplefilter("ignore", category=UserWarning)
        runner.run(*args, **kwargs)
    total = time.perf_counter() - t0
    samples = {k: v.detach() for k, v in runner.get_samples(group_by_chain=True).items()}
    diagnostics = runner.diagnostics()
    diverging = torch.zeros(num_chains, num_samples, dtype=torch.bool)
    for chain, (_, idx) in enumerate(sorted(
        diagnostics.get("divergences", {}).items(), key=lambda kv: int(kv[0].split()[-1])
    )):
        if len(idx):
            diverging[chain, torch.as_tensor(idx, dtype=torch.long)] = True
    observed = {
        name: site_value(site)
        for name, site in pyro.poutine.trace(model).get_trace(*args, **kwargs).nodes.items()
        if site["type"] == "sample" and site["is_observed"]
        and not is_deterministic(site)
    }
    info = {
        "engine": "pyro",
        "method": method,
        "jit_compile": jit_compile,
        "num_warmup": num_warmup,
        "num_samples": num_samples,
        "draws_done": num_samples,
        "interrupted": False,
        "total_seconds": total,
        "warmup_seconds": timer.seconds["Warmup"] if num_chains == 1 else float("nan"),
        "sampling_seconds": timer.seconds["Sample"] if num_chains == 1 else float("nan"),
        "seed": seed,
    }
    return Posterior(
        samples, {"diverging": diverging}, model=model, args=args, kwargs=kwargs,
        observed=observed, info=info,
    )
