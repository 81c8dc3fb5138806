"""The MCMC driver: warmup adaptation, sampling, progress, interruption.

Checkpoint files and :func:`~bayesact.infer.resume` live in :mod:`bayesact.infer.checkpoint`;
the compiled NUTS steps in :mod:`bayesact.infer.compiled`.
"""

from __future__ import annotations

import math
import os
import warnings
from collections.abc import Callable
from dataclasses import dataclass, field
from typing import Any

import pyro
import pyro.poutine as poutine
import torch
from tqdm.auto import tqdm

from bayesact.infer.adaptation import (
    DualAveragingState,
    WelfordState,
    adaptation_windows,
    dual_averaging_init,
    dual_averaging_update,
    welford_covariance,
    welford_init,
    welford_update,
)
from bayesact.infer.arguments import (
    check_checkpoint_path,
    check_init,
    check_int,
    check_observed,
    check_positive,
    check_seed,
    keyword_options,
    move_to,
    nonfinite_arguments,
    resolve_device_dtype,
    run_context,
    split_model_kwargs,
)
from bayesact.infer.checkpoint import (
    MCMC_FORMAT,
    check_latent_sites,
    checkpoint_payload,
    from_plain,
    register_format,
    save_checkpoint,
)
from bayesact.infer.compiled import compile_nuts_kernels
from bayesact.infer.hmc_core import (
    Metric,
    NutsKernels,
    TransitionStats,
    find_reasonable_step_size,
    hmc_transition,
    make_metric,
    nonfinite_grad_report,
    nuts_transition,
)
from bayesact.infer.phases import Phase, run_phases, show_progress, warn_user
from bayesact.infer.posterior import Posterior
from bayesact.infer.potential import Potential, build_potential
from bayesact.infer.sites import is_deterministic, site_dist, site_value

__all__ = ["mcmc", "resume_mcmc"]

STAT_NAMES = (*TransitionStats._fields, "step_size", "lp")


@dataclass
class MCMCConfig:
    """Everything that fixes a run besides the model and its data."""

    method: str
    num_chains: int
    num_warmup: int
    num_samples: int
    target_accept: float
    max_tree_depth: int
    dense_mass: bool
    num_steps: int | None
    step_size: float | None
    seed: int
    dtype: torch.dtype
    device: torch.device
    trajectory_length: float = 2 * math.pi
    checkpoint_every: int = 100
    capture: bool = True
    compile: bool = False
    sync_every: int | None = None
    max_delta_energy: float = 1000.0
    adapt_step_size: bool = True
    adapt_mass_matrix: bool = True


@dataclass
class SamplerState:
    """The complete state of a run between two iterations (what a checkpoint stores)."""

    iteration: int
    z: torch.Tensor
    potential: torch.Tensor
    grad: torch.Tensor
    step_size: torch.Tensor
    inverse_mass: torch.Tensor
    dual_averaging: DualAveragingState
    welford: WelfordState
    generator_state: torch.Tensor
    draws: torch.Tensor  # (C, S, D) unconstrained
    stats: dict[str, torch.Tensor]  # (C, S) each
    num_gradient_calls: int = 0
    sampling_gradient_calls: int = 0
    chain_gradients: int = 0
    warmup_seconds: float = 0.0
    sampling_seconds: float = 0.0
    info: dict[str, Any] = field(default_factory=dict)


# ------------------------------------------------------------------------------------------
# argument checks (shared with sghmc and svi)
# ------------------------------------------------------------------------------------------
# ------------------------------------------------------------------------------------------
# initialisation
# ------------------------------------------------------------------------------------------
def _nonfinite_sites(potential: Potential, z: torch.Tensor) -> list[str]:
    """Sample sites whose log-density is not finite at the flat point ``z[1, D]``."""
    values = {k: v[0].detach() for k, v in potential.constrain(z).items()}
    try:
        with torch.no_grad(), pyro.validation_enabled(False), warnings.catch_warnings():
            warnings.simplefilter("ignore")
            tr = poutine.trace(poutine.condition(potential.model, data=values)).get_trace(
                *potential.args, **potential.kwargs
            )
            bad = []
            for name, site in tr.nodes.items():
                if site["type"] == "sample" and not is_deterministic(site):
                    lp = site_dist(site).log_prob(site_value(site))
                    if not bool(torch.isfinite(lp).all()):
                        bad.append(f"'{name}' ({int((~torch.isfinite(lp)).sum())} non-finite terms)")
    except Exception:  # a diagnosis only: the caller raises its own error
        return []
    return bad


def _no_finite_start(potential: Potential, z: torch.Tensor, what: str) -> ValueError:
    """The error for a start without a finite potential, naming the arguments and sites to blame."""
    parts = [f"could not find a finite initial potential ({what})"]
    args = nonfinite_arguments(potential.args, potential.kwargs)
    if args:
        parts.append(f"non-finite values in the model's arguments: {', '.join(args)}")
    sites = _nonfinite_sites(potential, z[None])
    if sites:
        parts.append(f"sites with a non-finite log-density there: {', '.join(sites)}")
    return ValueError("; ".join(parts) + (
        "" if args or sites else "; pass init= with values in the support of every site"
    ))


def _initial_position(
    potential: Potential, cfg: MCMCConfig, init: Any, gen: torch.Generator
) -> tuple[torch.Tensor, torch.Tensor, torch.Tensor]:
    c, d = cfg.num_chains, potential.dim
    if isinstance(init, dict):
        z = potential.unconstrain(init, (c,))
        for site in potential.sites:
            if not bool(torch.isfinite(z[:, site.offset : site.offset + site.size]).all()):
                raise ValueError(f"init['{site.name}'] lies outside the support of site '{site.name}'")
        u, g = potential.value_and_grad(z)
        bad = ~(torch.isfinite(u) & torch.isfinite(g).all(-1))
        if bool(bad.any()):
            raise _no_finite_start(potential, z[bad][0], "at init for some chains")
        return z, u, g
    # Stan's default: uniform(-2, 2) in unconstrained space, redrawn where U is not finite.
    z = torch.empty(c, d, dtype=cfg.dtype, device=cfg.device)
    bad = torch.ones(c, dtype=torch.bool, device=cfg.device)
    for _ in range(100):
        fresh = torch.rand(c, d, generator=gen, dtype=cfg.dtype, device=cfg.device) * 4 - 2
        z = torch.where(bad[:, None], fresh, z)
        u, g = potential.value_and_grad(z)
        bad = ~(torch.isfinite(u) & torch.isfinite(g).all(-1))
        if not bool(bad.any()):
            return z, u, g
    raise _no_finite_start(potential, z[bad][0], "in 100 uniform(-2, 2) draws")


def _new_state(
    potential: Potential, cfg: MCMCConfig, init: Any, gen: torch.Generator
) -> SamplerState:
    z, u, g = _initial_position(potential, cfg, init, gen)
    c, d = z.shape
    inverse_mass = (
        torch.eye(d, dtype=cfg.dtype, device=cfg.device).expand(c, d, d).clone()
        if cfg.dense_mass
        else torch.ones(c, d, dtype=cfg.dtype, device=cfg.device)
    )
    step = torch.full((c,), cfg.step_size or 1.0, dtype=cfg.dtype, device=cfg.device)
    if cfg.num_warmup > 0 and cfg.adapt_step_size:
        step = find_reasonable_step_size(
            z, u, g, step, make_metric(inverse_mass), potential.value_and_grad, gen,
        )
    draws = torch.full((c, cfg.num_samples, d), math.nan, dtype=cfg.dtype, device=cfg.device)
    stats: dict[str, torch.Tensor] = {}
    for name in STAT_NAMES:
        if name in ("diverging", "reached_max_treedepth"):
            stats[name] = torch.zeros(c, cfg.num_samples, dtype=torch.bool, device=cfg.device)
        elif name in ("num_steps", "tree_depth"):
            stats[name] = torch.zeros(c, cfg.num_samples, dtype=torch.long, device=cfg.device)
        elif name == "nonfinite_grad":  # flat index of the bad component, -1 if none
            stats[name] = torch.full((c, cfg.num_samples), -1, dtype=torch.long, device=cfg.device)
        else:
            stats[name] = torch.full((c, cfg.num_samples), math.nan, dtype=cfg.dtype, device=cfg.device)
    return SamplerState(
        iteration=0,
        z=z,
        potential=u,
        grad=g,
        step_size=step,
        inverse_mass=inverse_mass,
        dual_averaging=dual_averaging_init(step),
        welford=welford_init(c, d, cfg.dense_mass, z),
        generator_state=gen.get_state(),
        draws=draws,
        stats=stats,
    )


def warn_divergences(diverging: torch.Tensor) -> None:
    """Warn (at the user's line) when any post-warmup transition diverged; ``diverging`` (C, S)."""
    num_div = int(diverging.sum())
    if num_div:
        warn_user(
            f"{num_div} divergent transitions after warmup (of {diverging.numel()} draws): the "
            "posterior may be biased; raise target_accept or reparameterise "
            "(see sample_stats['diverging'])"
        )


# ------------------------------------------------------------------------------------------
# the loop
# ------------------------------------------------------------------------------------------
class _Counter:
    """Counts batched gradient calls (a Python int: no device work)."""

    def __init__(self, fn: Callable[[torch.Tensor], tuple[torch.Tensor, torch.Tensor]]) -> None:
        self.fn = fn
        self.calls = 0

    def __call__(self, z: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor]:
        self.calls += 1
        return self.fn(z)


def _transition(
    state: SamplerState,
    metric: Metric,
    cfg: MCMCConfig,
    grad_fn: Callable,
    gen: torch.Generator,
    kernels: NutsKernels | None = None,
) -> tuple[tuple[torch.Tensor, torch.Tensor, torch.Tensor], TransitionStats]:
    if cfg.method == "nuts":
        sync = cfg.sync_every or (2 if cfg.device.type == "cpu" else 8)
        return nuts_transition(
            state.z, state.potential, state.grad, state.step_size, metric, grad_fn, gen,
            max_tree_depth=cfg.max_tree_depth, max_delta_energy=cfg.max_delta_energy,
            sync_every=sync, kernels=kernels,
        )
    if cfg.num_steps is not None:
        steps = torch.full_like(state.step_size, cfg.num_steps, dtype=torch.long)
    else:
        steps = torch.ceil(cfg.trajectory_length / state.step_size).clamp(1, 2**cfg.max_tree_depth)
        steps = steps.to(torch.long)
    return hmc_transition(
        state.z, state.potential, state.grad, state.step_size, metric, grad_fn, gen,
        num_steps=steps, max_delta_energy=cfg.max_delta_energy,
    )


def _adapt(
    state: SamplerState,
    stats: TransitionStats,
    metric: Metric,
    cfg: MCMCConfig,
    windows: list[tuple[int, int]],
    grad_fn: Callable,
    gen: torch.Generator,
) -> Metric:
    i = state.iteration
    if cfg.adapt_step_size:
        state.dual_averaging = dual_averaging_update(
            state.dual_averaging, stats.acceptance_rate, cfg.target_accept
        )
        state.step_size = state.dual_averaging.log_step.exp()
    if cfg.adapt_mass_matrix:
        for start, end in windows:
            if start <= i < end:
                state.welford = welford_update(state.welford, state.z)
                if i == end - 1:
                    state.inverse_mass = welford_covariance(state.welford)
                    metric = make_metric(state.inverse_mass)
                    num_chains, dim = state.z.shape
                    state.welford = welford_init(num_chains, dim, cfg.dense_mass, state.z)
                    if cfg.adapt_step_size:
                        state.step_size = find_reasonable_step_size(
                            state.z, state.potential, state.grad, state.step_size, metric,
                            grad_fn, gen,
                        )
                        state.dual_averaging = dual_averaging_init(state.step_size)
    if i == cfg.num_warmup - 1 and cfg.adapt_step_size:
        state.step_size = state.dual_averaging.log_step_avg.exp()
    return metric


class _Run:
    """One vectorized run: the potential, the config and the mutable sampler state."""

    def __init__(
        self,
        potential: Potential,
        cfg: MCMCConfig,
        state: SamplerState,
        args: tuple,
        kwargs: dict,
        checkpoint: str | None,
    ) -> None:
        self.potential = potential
        self.cfg = cfg
        self.state = state
        self.args = args
        self.kwargs = kwargs
        self.checkpoint = checkpoint

    def run(self, progress: bool) -> Posterior:
        cfg = self.cfg
        gen = torch.Generator(device=cfg.device)
        gen.set_state(self.state.generator_state)
        grad_fn = _Counter(self.potential.value_and_grad)
        metric = make_metric(self.state.inverse_mass)
        kernels = None
        if cfg.compile and cfg.method == "nuts" and self.potential.graph is not None:
            kernels = self._compile_kernels(grad_fn)
        windows = adaptation_windows(cfg.num_warmup)
        total = cfg.num_warmup + cfg.num_samples
        interrupted = False
        divergences = 0
        calls0 = grad_fn.calls

        def advance(phase: Phase, bar: tqdm) -> bool:
            nonlocal metric, divergences
            state = self.state
            (z, u, g), stats = _transition(state, metric, cfg, grad_fn, gen, kernels)
            new_state = SamplerState(**{**state.__dict__, "z": z, "potential": u, "grad": g})
            if phase.name == "warmup":
                metric = _adapt(new_state, stats, metric, cfg, windows, grad_fn, gen)
            else:
                k = new_state.iteration - cfg.num_warmup
                new_state.draws[:, k] = z
                for name in TransitionStats._fields:
                    new_state.stats[name][:, k] = getattr(stats, name)
                new_state.stats["step_size"][:, k] = new_state.step_size
                new_state.stats["lp"][:, k] = -u
                new_state.chain_gradients += int(stats.num_steps.sum())
            new_state.iteration += 1
            new_state.generator_state = gen.get_state()
            self.state = state = new_state
            divergences += int(stats.diverging.sum()) if progress else 0
            bar.update(1)
            if progress and state.iteration % 10 == 0:
                bar.set_postfix(step=f"{float(state.step_size.mean()):.2e}", div=divergences,
                                refresh=False)
            if self.checkpoint and state.iteration % cfg.checkpoint_every == 0:
                self.save()
            return True

        def on_phase_end(phase: Phase, seconds: float) -> None:
            nonlocal divergences, calls0
            state = self.state
            calls = grad_fn.calls - calls0
            if phase.name == "warmup":
                state.warmup_seconds += seconds
            else:
                state.sampling_seconds += seconds
                state.sampling_gradient_calls += calls
            state.num_gradient_calls += calls
            divergences, calls0 = 0, grad_fn.calls

        phases = [Phase("warmup", 0, cfg.num_warmup), Phase("sample", cfg.num_warmup, total)]
        try:
            run_phases(phases, lambda: self.state.iteration, advance, on_phase_end, progress,
                       dynamic_ncols=True)
        except KeyboardInterrupt:
            interrupted = True
            warn_user(
                f"sampling interrupted after {self.state.iteration} of {total} iterations; "
                "returning the draws made so far"
                + (f" (checkpoint saved to {self.checkpoint})" if self.checkpoint else "")
            )
        if self.checkpoint:
            self.save()
        return self.posterior(interrupted)

    def save(self) -> None:
        """Write the checkpoint (configuration, state, model reference; plain data only)."""
        latent = {s.name: s.shape for s in self.potential.sites}
        payload = checkpoint_payload(
            MCMC_FORMAT, self.cfg, self.state, self.potential.model, self.args, self.kwargs, latent
        )
        save_checkpoint(str(self.checkpoint), payload)

    def _compile_kernels(self, counter: _Counter) -> NutsKernels | None:
        """The NUTS leaf, pair and boundary steps compiled with the captured gradient inlined;
        ``None`` (eager steps) when compilation fails."""
        cfg, state = self.cfg, self.state
        try:
            if self.potential.graph is None:
                raise ValueError("no captured gradient graph to compile")
            kernels, seconds = compile_nuts_kernels(
                self.potential.graph, state.z, state.potential, state.grad, state.step_size,
                state.inverse_mass, cfg.max_tree_depth, cfg.max_delta_energy, counter,
            )
        except Exception as exc:  # compilation is an optimisation: fall back to eager steps
            warn_user(f"could not compile the NUTS steps ({exc!r}); running them eagerly")
            return None
        state.info["compile_seconds"] = state.info.get("compile_seconds", 0.0) + seconds
        return kernels

    def posterior(self, interrupted: bool) -> Posterior:
        cfg, state = self.cfg, self.state
        done = max(0, state.iteration - cfg.num_warmup)
        draws = state.draws[:, :done]
        samples = {k: v.detach() for k, v in self.potential.constrain(draws).items()}
        stats = {k: v[:, :done].clone() for k, v in state.stats.items()}
        if cfg.method == "hmc":
            stats.pop("tree_depth")
            stats.pop("reached_max_treedepth")
        stats["n_steps"] = stats["num_steps"]
        nonfinite, per_site = nonfinite_grad_report(stats["nonfinite_grad"], self.potential.sites)
        stats["nonfinite_grad"] = stats["nonfinite_grad"] >= 0
        if nonfinite:
            warn_user(f"{nonfinite} transitions after warmup hit a non-finite gradient at a finite "
                      f"potential (per site: {per_site}); they diverged and the posterior there is "
                      "not explored: check the model's gradient (see sample_stats['nonfinite_grad'])")
        info = {
            "nonfinite_grad": nonfinite,
            "nonfinite_grad_sites": per_site,
            "engine": "bayesact",
            "method": cfg.method,
            "potential_mode": self.potential.mode
            + ("+compiled_leaf" if "compile_seconds" in state.info else ""),
            "compile_seconds": state.info.get("compile_seconds", 0.0),
            "num_warmup": cfg.num_warmup,
            "num_samples": cfg.num_samples,
            "draws_done": done,
            "interrupted": interrupted,
            "warmup_seconds": state.warmup_seconds,
            "sampling_seconds": state.sampling_seconds,
            "num_gradient_calls": state.num_gradient_calls,
            "sampling_gradient_calls": state.sampling_gradient_calls,
            "chain_gradients": state.chain_gradients,
            "inverse_mass": state.inverse_mass.detach().cpu(),
            "seed": cfg.seed,
            "checkpoint": self.checkpoint,
        }
        posterior = Posterior(
            samples, stats, model=self.potential.model, args=self.args, kwargs=self.kwargs,
            observed=self.potential.observed, info=info,
        )
        if any(
            is_deterministic(s) for s in self.potential.prior_trace.nodes.values()
        ):
            posterior.add_deterministic_sites()
        return posterior


# ------------------------------------------------------------------------------------------
# public API
# ------------------------------------------------------------------------------------------
def mcmc(
    model: Callable[..., Any],
    *args: Any,
    method: str = "nuts",
    num_chains: int = 4,
    num_warmup: int = 500,
    num_samples: int = 500,
    chain_method: str = "vectorized",
    engine: str = "bayesact",
    device: str | torch.device | None = None,
    dtype: torch.dtype | None = None,
    seed: int | None = None,
    target_accept: float = 0.8,
    max_tree_depth: int = 10,
    dense_mass: bool = False,
    num_steps: int | None = None,
    step_size: float | None = None,
    trajectory_length: float = 2 * math.pi,
    adapt_step_size: bool = True,
    adapt_mass_matrix: bool = True,
    max_delta_energy: float = 1000.0,
    init: dict[str, Any] | str | None = None,
    progress: bool = True,
    checkpoint: str | os.PathLike | None = None,
    checkpoint_every: int = 100,
    capture: bool = True,
    compile: bool = False,
    sync_every: int | None = None,
    jit_compile: bool = False,
    model_kwargs: dict[str, Any] | None = None,
    **kwargs: Any,
) -> Posterior:
    """Sample the posterior of a Pyro model with NUTS or HMC, all chains at once.

    Latent sites are sampled in unconstrained space through Pyro's ``biject_to`` transforms
    and reported in constrained space. NUTS is the No-U-Turn Sampler with multinomial
    sampling and the generalised U-turn criterion (Hoffman & Gelman 2014, JMLR 15;
    Betancourt 2017, arXiv:1701.02434); warmup adapts the step size by dual averaging and a
    diagonal or dense mass matrix in Stan's windows. HMC uses a fixed trajectory of
    ``num_steps`` leapfrog steps (default ``ceil(trajectory_length / step_size)``).

    The model is called as ``model(*args, **kwargs)``, as ``pyro.infer.MCMC.run`` does: every
    keyword argument that is not one of the options below goes to the model.

    Args:
        model: a Pyro model with continuous latent sites.
        *args: model arguments (floating tensors are moved to ``device`` and ``dtype``).
        method: ``"nuts"`` or ``"hmc"``.
        num_chains: number of chains (>= 1).
        num_warmup: adaptation iterations (discarded).
        num_samples: draws kept per chain.
        chain_method: ``"vectorized"`` (chains as a batch dimension) or ``"sequential"``.
        engine: ``"bayesact"`` or ``"pyro"`` (``pyro.infer.MCMC`` with the same settings).
        device: device for the chains (default: that of the model's tensor arguments).
        dtype: floating type of the whole run (default: that of the model's first floating
            tensor argument, else of its parameters). Arguments are converted, the model
            runs with ``dtype`` as torch's default type (the tensors it creates follow), and
            an ``nn.Module`` model (e.g. a ``PyroModule``) is cast in place with
            ``module.to(dtype)``, as ``model.double()`` would.
        seed: seed of the sampler's own random stream (reproducible on CPU).
        target_accept: dual-averaging target of the mean acceptance probability.
        max_tree_depth: NUTS doublings (at most 2^depth - 1 leapfrog steps); for HMC, caps
            the adaptive number of steps at 2^depth.
        dense_mass: adapt a dense instead of a diagonal mass matrix.
        num_steps: leapfrog steps per HMC trajectory.
        step_size: initial (or, with ``adapt_step_size=False``, fixed) step size.
        trajectory_length: HMC trajectory length when ``num_steps`` is None (> 0).
        adapt_step_size: adapt the step size by dual averaging during warmup.
        adapt_mass_matrix: adapt the mass matrix in Stan's warmup windows.
        max_delta_energy: energy error (> 0) beyond which a transition counts as divergent.
        init: ``None``/``"uniform"`` (uniform(-2, 2) in unconstrained space, as Stan) or a
            dict of constrained values of every latent site, each with the site's shape or
            (num_chains, *shape).
        progress: show a tqdm bar per phase with step size and divergence count (only when
            stderr is a terminal or a notebook: never in log files).
        checkpoint: file to save the sampler state to every ``checkpoint_every`` iterations
            and on interruption (its directory must exist); :func:`resume` continues from it.
        checkpoint_every: iterations between two checkpoint saves (>= 1).
        capture: capture the batched gradient as a graph (``make_fx``) instead of re-running
            Pyro's effect handlers at every step (checked, with a fallback to ``vmap``).
        compile: compile the NUTS steps (or, for HMC, the captured gradient) with
            ``torch.compile``.
        sync_every: NUTS tree levels between two host synchronisations (default: 2 on CPU,
            8 on GPU).
        jit_compile: ``engine="pyro"`` only: Pyro's JIT of the potential.
        model_kwargs: keyword arguments of the model given as a dict (for names that clash
            with the options above); merged with ``**kwargs``.
        **kwargs: keyword arguments of the model.

    Returns:
        A :class:`~bayesact.infer.Posterior` with samples shaped (chain, draw, ...).
        A KeyboardInterrupt returns the draws made so far (``info["interrupted"]``).

    Raises:
        ValueError: an option outside its domain (named), a ``device`` that is not
            available, a ``checkpoint`` whose directory does not exist, an ``init`` with unknown
            sites or wrong shapes, NaN or infinite observed values, or a start without a
            finite potential (naming the arguments and sites with non-finite values).
        TypeError: a keyword argument that is neither an option nor a parameter of the model.
    """
    if not callable(model):
        raise ValueError(f"model must be a callable Pyro model, got {type(model).__name__}")
    model_kwargs = split_model_kwargs("mcmc", model, model_kwargs, kwargs, MCMC_OPTIONS)
    if method not in ("nuts", "hmc"):
        raise ValueError(f"method must be 'nuts' or 'hmc', got {method!r}")
    if chain_method not in ("vectorized", "sequential"):
        raise ValueError(f"chain_method must be 'vectorized' or 'sequential', got {chain_method!r}")
    if engine not in ("bayesact", "pyro"):
        raise ValueError(f"engine must be 'bayesact' or 'pyro', got {engine!r}")
    check_int("num_chains", num_chains, 1)
    check_int("num_warmup", num_warmup, 0)
    check_int("num_samples", num_samples, 1)
    check_int("max_tree_depth", max_tree_depth, 1)
    check_int("checkpoint_every", checkpoint_every, 1)
    if num_steps is not None:
        check_int("num_steps", num_steps, 1)
    if sync_every is not None:
        check_int("sync_every", sync_every, 1)
    if not (isinstance(target_accept, int | float) and 0.0 < float(target_accept) < 1.0):
        raise ValueError(f"target_accept must lie in (0, 1), got {target_accept!r}")
    if step_size is not None:
        check_positive("step_size", step_size)
    trajectory_length = check_positive("trajectory_length", trajectory_length)
    max_delta_energy = check_positive("max_delta_energy", max_delta_energy, allow_inf=True)
    seed = check_seed(seed)
    if chain_method == "sequential" and checkpoint is not None:
        raise ValueError("checkpoint= needs chain_method='vectorized'")
    path = check_checkpoint_path(checkpoint)
    device_, dtype_ = resolve_device_dtype(args, model_kwargs, device, dtype, model)
    args = tuple(move_to(a, device_, dtype_) for a in args)
    model_kwargs = {k: move_to(v, device_, dtype_) for k, v in model_kwargs.items()}
    if seed is None:
        seed = int(torch.randint(0, 2**31 - 1, ()).item())
    with run_context(model, dtype_, device_):
        if engine == "pyro":
            from bayesact.infer.pyro_engine import run_pyro_mcmc

            post = run_pyro_mcmc(
                model, args, model_kwargs, method=method, num_chains=num_chains,
                num_warmup=num_warmup, num_samples=num_samples, seed=seed,
                target_accept=target_accept, max_tree_depth=max_tree_depth, dense_mass=dense_mass,
                num_steps=num_steps, step_size=step_size, init=init, progress=show_progress(progress),
                trajectory_length=trajectory_length, jit_compile=jit_compile,
                adapt_step_size=adapt_step_size, adapt_mass_matrix=adapt_mass_matrix,
            )
            warn_divergences(post.sample_stats["diverging"])
            return post
        options: dict[str, Any] = dict(
            trajectory_length=trajectory_length, checkpoint_every=checkpoint_every, capture=bool(capture),
            compile=bool(compile), sync_every=sync_every, max_delta_energy=max_delta_energy,
            adapt_step_size=bool(adapt_step_size), adapt_mass_matrix=bool(adapt_mass_matrix),
        )
        if chain_method == "sequential":
            post = _sequential(model, args, model_kwargs, init, progress, [
                MCMCConfig(method, 1, num_warmup, num_samples, float(target_accept), max_tree_depth,
                           dense_mass, num_steps, step_size, seed + chain, dtype_, device_, **options)
                for chain in range(num_chains)
            ])
            warn_divergences(post.sample_stats["diverging"])
            return post
        cfg = MCMCConfig(
            method, num_chains, num_warmup, num_samples, float(target_accept), max_tree_depth,
            dense_mass, num_steps, step_size, seed, dtype_, device_, **options,
        )
        post = _start(model, args, model_kwargs, cfg, init, path, progress)
    warn_divergences(post.sample_stats["diverging"])
    return post


MCMC_OPTIONS = keyword_options(mcmc)


def _sequential(
    model: Callable, args: tuple, kwargs: dict, init: Any, progress: bool, configs: list[MCMCConfig]
) -> Posterior:
    """One chain after another. On a KeyboardInterrupt, the chains completed so far are the
    posterior and the interrupted chain's draws are kept in ``info["interrupted_chain"]``
    (site -> (1, draws, ...)); if no chain completed, the interrupted chain is the posterior."""
    parts: list[Posterior] = []
    partial: Posterior | None = None
    for chain, cfg in enumerate(configs):
        try:
            post = _start(model, args, kwargs, cfg, init, None, progress, chain=(chain, len(configs)))
        except KeyboardInterrupt:  # in set-up (tracing, capture, initialisation): no draws
            if not parts:
                raise
            warn_user(f"sampling interrupted while setting up chain {chain}; returning the "
                      f"{len(parts)} completed chain(s)")
            break
        if not post.info["interrupted"]:
            parts.append(post)
            continue
        partial = post
        break
    if not parts:
        assert partial is not None
        partial.info["chain_method"] = "sequential"
        return partial
    out = Posterior.concat_chains(parts)
    if partial is not None:
        out.info["interrupted"] = True
        out.info["interrupted_chain"] = {k: v.clone() for k, v in partial.samples.items()}
        out.info["interrupted_chain_draws"] = partial.num_draws
    out.info["chains_completed"] = len(parts)
    return out


def _start(
    model: Callable, args: tuple, kwargs: dict, cfg: MCMCConfig, init: Any,
    checkpoint: str | None, progress: bool, chain: tuple[int, int] | None = None,
) -> Posterior:
    potential = build_potential(
        model, args, kwargs, dtype=cfg.dtype, device=cfg.device, num_chains=cfg.num_chains,
        capture=cfg.capture, compile=cfg.compile and cfg.method == "hmc",
    )
    check_observed(potential)
    if chain is None:
        check_init(potential, init, cfg.num_chains)
    else:  # sequential: init is checked against all chains, then this chain's values are taken
        check_init(potential, init, chain[1])
        init = _chain_slice(potential, init, *chain)
    gen = torch.Generator(device=cfg.device).manual_seed(cfg.seed)
    state = _new_state(potential, cfg, init, gen)
    return _Run(potential, cfg, state, args, kwargs, checkpoint).run(progress)


def _chain_slice(potential: Potential, init: Any, chain: int, num_chains: int) -> Any:
    if not isinstance(init, dict):
        return init
    shapes = {s.name: tuple(s.shape) for s in potential.sites}
    out = {}
    for k, v in init.items():
        v = torch.as_tensor(v)
        out[k] = v[chain] if tuple(v.shape) == (num_chains, *shapes[k]) else v
    return out


def resume_mcmc(
    payload: dict[str, Any], path: str, model: Callable[..., Any], args: tuple, model_kwargs: dict,
    progress: bool,
) -> Posterior:
    """Continue the :func:`mcmc` run stored in ``payload`` (see :func:`bayesact.infer.resume`, which
    has moved ``args`` and ``model_kwargs`` to the run's device and dtype to check them)."""
    cfg: MCMCConfig = from_plain(MCMCConfig, payload["config"])
    with run_context(model, cfg.dtype, cfg.device):
        potential = build_potential(
            model, args, model_kwargs, dtype=cfg.dtype, device=cfg.device,
            num_chains=cfg.num_chains, capture=cfg.capture, compile=cfg.compile and cfg.method == "hmc",
        )
        check_latent_sites(payload, {s.name: s.shape for s in potential.sites}, path)
        state: SamplerState = from_plain(SamplerState, payload["state"])
        post = _Run(potential, cfg, state, args, model_kwargs, path).run(progress)
    warn_divergences(post.sample_stats["diverging"])
    return post


register_format(MCMC_FORMAT, resume_mcmc)
