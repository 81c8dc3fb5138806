"""NUTS/HMC with warmup adaptation: :func:`mcmc`, its configuration, state and runner.

The runner is a :class:`~bayesact.infer.run.RunLoop` (phases, Ctrl-C, checkpoints and the
posterior are the shared run loop's); checkpoint files and :func:`~bayesact.infer.resume` live
in :mod:`bayesact.infer.checkpoint`, the compiled NUTS steps in :mod:`bayesact.infer.compiled`.
"""

from __future__ import annotations

import collections
import functools
import math
import os
import threading
import time
import warnings
from collections.abc import Callable
from dataclasses import dataclass, replace
from typing import Any, ClassVar, Literal

import pyro
import pyro.poutine as poutine
import torch
from tqdm.auto import tqdm

from bayesact import compilation, compile_packages
from bayesact.infer import compiled as compiled_steps
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
    check_init,
    check_int,
    check_observed,
    check_positive,
    keyword_options,
    nonfinite_arguments,
    prepare_run,
    run_context,
)
from bayesact.infer.checkpoint import MCMC_FORMAT, register_format
from bayesact.infer.compiled import CompileFailed, compile_nuts_kernels, nuts_kernels_key
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
from bayesact.infer.packaged import WORKER as PACKAGE_WORKER
from bayesact.infer.packaged import build_files, load_nuts_kernels
from bayesact.infer.phases import Phase, show_progress, warn_user
from bayesact.infer.posterior import Posterior
from bayesact.infer.potential import Potential, build_potential
from bayesact.infer.run import RunConfig, RunLoop, RunState, resume_run
from bayesact.infer.sites import is_deterministic, site_dist, site_value

__all__ = ["mcmc", "resume_mcmc"]

STAT_NAMES = (*TransitionStats._fields, "step_size", "lp")


@dataclass(kw_only=True)
class MCMCConfig(RunConfig):
    """Everything that fixes a run besides the model and its data."""

    method: str
    num_warmup: int
    target_accept: float
    max_tree_depth: int
    dense_mass: bool
    num_steps: int | None
    step_size: float | None
    trajectory_length: float = 2 * math.pi
    compile: bool | str = False
    sync_every: int | None = None
    max_delta_energy: float = 1000.0
    adapt_step_size: bool = True
    adapt_mass_matrix: bool = True


@dataclass(kw_only=True)
class SamplerState(RunState):
    """The complete state of a run between two iterations (what a checkpoint stores)."""

    potential: torch.Tensor
    grad: torch.Tensor
    step_size: torch.Tensor
    inverse_mass: torch.Tensor
    dual_averaging: DualAveragingState
    welford: WelfordState
    num_gradient_calls: int = 0
    sampling_gradient_calls: int = 0
    chain_gradients: int = 0
    warmup_seconds: float = 0.0


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
        z = torch.where(bad[:, None], cfg.uniform_start(d, gen), z)
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
    stats = cfg.empty_stats(STAT_NAMES)
    for name in ("diverging", "reached_max_treedepth"):
        stats[name] = torch.zeros(c, cfg.num_samples, dtype=torch.bool, device=cfg.device)
    for name in ("num_steps", "tree_depth"):
        stats[name] = torch.zeros(c, cfg.num_samples, dtype=torch.long, device=cfg.device)
    # the flat index of the first non-finite gradient component, -1 if none
    stats["nonfinite_grad"] = torch.full((c, cfg.num_samples), -1, dtype=torch.long, device=cfg.device)
    return SamplerState(
        iteration=0, z=z, potential=u, grad=g, step_size=step, inverse_mass=inverse_mass,
        dual_averaging=dual_averaging_init(step), welford=welford_init(c, d, cfg.dense_mass, z),
        generator_state=gen.get_state(), draws=cfg.empty_draws(d), stats=stats,
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


#: ``compile="auto"``: iterations timed on the eager path before deciding whether to compile
AUTO_PROBE_ITERATIONS = 5
#: ``compile="auto"``: compile only when the rest of the run would take longer than this eagerly.
#: Only the pair-of-leaves step is compiled (one graph). Measured on a 2-core CPU under load ~3
#: (diabetes BNN 10-50-50-1, 4 chains, 300 + 300, one thread): the cold compile takes ~25-65 s
#: in the background and slows the eager iterations meanwhile (it holds the GIL while tracing
#: and generating code); the compiled steps then run ~2.5x faster. With this threshold that run
#: took 113 s cold (switch at iteration 113; the eager run ~110-130 s at that load) and filled
#: the persistent cache, so the next process compiled in 5.6 s and took 43.5 s
AUTO_MIN_SECONDS = 60.0
#: ``compile="auto"`` when this machine compiled the same NUTS steps before (a
#: :func:`~bayesact.compilation.compile_record`): Inductor's persistent cache then holds them, and
#: the threshold is this factor times the recorded compile time (the ratio 90 s / 40 s above)
AUTO_WARM_FACTOR = 2.25
#: The expected compile time recorded after a cold compile, for the next (warm) one: measured
#: 6.2 s for the tanh BNN with 4 chains on a loaded 2-core CPU (72 s cold), rounded up
AUTO_WARM_GUESS_SECONDS = 8.0
#: ``compile="auto"`` on the CPU: a run projected to take longer than this eagerly gets a
#: detached build of the compiled package of its NUTS steps (:mod:`bayesact.infer.packaged`), so
#: the next run of the same model on this machine loads them in milliseconds (measured: tanh BNN,
#: 1 chain, 150 + 150, 8.5 s eagerly; the second process loads the package and takes 2.5 s)
AUTO_PACKAGE_MIN_SECONDS = 5.0
#: ``compile="auto"``: a run projected to take longer than this starts the package build at once
#: and switches to the package when it is built (a build takes ~20-25 s on an idle 2-core CPU, ~50
#: s under load); a shorter one starts the build only when it ends, so that the build (which
#: slowed a 9-s run by 1.2 s, ~13 %, while it ran beside it) never competes with its sampling
AUTO_PACKAGE_EARLY_SECONDS = 30.0
#: ``compile="auto"`` on the CPU: a run projected to take longer than this eagerly runs its
#: pair-of-leaves step as TorchScript (:func:`bayesact.compilation.torchscript`: the same ATen
#: kernels, so the same draws bit for bit, without Python's cost per operation) until compiled
#: steps arrive. Built in the sampling thread (``torch.jit.trace`` of the eager step: under 0.1 s);
#: the step then runs ~2x faster (tanh BNN D = 4, H = 50, N = 200, 1 chain: 0.9 -> 0.41 ms per pair)
AUTO_SCRIPT_MIN_SECONDS = 0.5


class _AutoCompile:
    """``compile="auto"``: sample on the eager path; from :data:`AUTO_PROBE_ITERATIONS` timed
    iterations on, before every iteration, project the rest of the run from the last
    :data:`AUTO_PROBE_ITERATIONS` iterations (early warm-up trees are shallow, so a single early
    look underestimates: a diabetes BNN run of 67 s projected under 60 s at iteration 5); once
    the projection exceeds :meth:`min_seconds`, compile the NUTS steps in a background thread (on
    a copy of the state) and switch to them at the first iteration after they are built and
    verified. A short run never compiles, and no iteration waits for a compile.
    ``background=False`` (tests) compiles in the caller's thread at the decision point instead.
    """

    background = True

    def __init__(self, run: _Run, iterations_left: int) -> None:
        self.run = run
        self.left = iterations_left
        self.seen = 0
        self.thread: threading.Thread | None = None
        self.kernels: NutsKernels | None = None
        self.seconds = 0.0
        self.done = False
        self.stamps: collections.deque[float] = collections.deque(maxlen=AUTO_PROBE_ITERATIONS + 1)
        self.threshold: float | None = None
        self.package_wanted = False  # the run is long enough to leave a package for the next
        self.package_started = False  # a package build was tried
        self.package_pending = False  # a package build is running: switch when it is ready
        self.scripted = False  # the TorchScript step was tried

    def tick(self) -> None:
        """Called before every iteration."""
        if self.done:
            return
        if self.thread is not None:
            if not self.thread.is_alive():
                self._switch()
            return
        if self.package_pending:
            kernels = self.run._packaged_kernels()
            if kernels is not None:
                self.kernels, self.seconds = kernels, 0.0
                self._switch()
                return
            key = self.run.kernels_key
            self.package_pending = key is not None and compile_packages.building(key)
        self.stamps.append(time.perf_counter())
        if self.seen >= AUTO_PROBE_ITERATIONS:
            per_iteration = (self.stamps[-1] - self.stamps[0]) / (len(self.stamps) - 1)
            projected = per_iteration * (self.left - self.seen)
            if not self.scripted and projected >= AUTO_SCRIPT_MIN_SECONDS:
                self.scripted = True
                self.run._script_kernels()
            self.package_wanted |= projected >= AUTO_PACKAGE_MIN_SECONDS
            if not self.package_started and projected >= AUTO_PACKAGE_EARLY_SECONDS:
                self.package_started = True
                self.package_pending = self.run._start_package_build()
            if self.threshold is None:
                self.threshold = self.min_seconds()
            if not self.package_pending and projected >= self.threshold:
                self._begin()
        self.seen += 1

    def min_seconds(self) -> float:
        """The eager time the rest of the run must exceed for compiling to pay: less when this
        machine compiled the same steps before (a cache hit is several times faster)."""
        key = self.run.kernels_key
        expected = None if key is None else compilation.compile_record(key)
        return AUTO_MIN_SECONDS if expected is None else min(AUTO_MIN_SECONDS, AUTO_WARM_FACTOR * expected)

    def _begin(self) -> None:
        run = self.run
        snapshot = replace(run.state, z=run.state.z.clone(), potential=run.state.potential.clone(),
                           grad=run.state.grad.clone(), step_size=run.state.step_size.clone(),
                           inverse_mass=run.state.inverse_mass.clone(), info={})

        def work() -> None:
            self.kernels = run._compile_kernels(run.grad_fn, snapshot)
            self.seconds = snapshot.info.get("compile_seconds", 0.0)

        self.thread = threading.Thread(target=work, name="bayesact-compile-nuts", daemon=True)
        if self.background:
            self.thread.start()
        else:
            work()
            self.thread = None
            self._switch()

    def _switch(self) -> None:
        self.done = True
        if self.kernels is not None:
            self.run.kernels = self.kernels
            info = self.run.state.info
            info["compile_seconds"] = info.get("compile_seconds", 0.0) + self.seconds
            info["compiled_from_iteration"] = self.run.state.iteration


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


class _Run(RunLoop):
    """One vectorized NUTS/HMC run: warmup (adaptation), then sampling."""

    format = MCMC_FORMAT
    config_type = MCMCConfig
    state_type = SamplerState
    bar_options: ClassVar[dict[str, Any]] = {"dynamic_ncols": True}
    cfg: MCMCConfig
    state: SamplerState

    @classmethod
    def rebuild(
        cls, cfg: MCMCConfig, state: SamplerState, model: Callable[..., Any], args: tuple, kwargs: dict,
        checkpoint: str,
    ) -> _Run:
        return cls(_potential(model, args, kwargs, cfg), cfg, state, model, args, kwargs, checkpoint)

    def run(self, progress: bool) -> Posterior:
        cfg = self.cfg
        self.progress = progress
        self.grad_fn = _Counter(self.potential.value_and_grad)
        self.metric = make_metric(self.state.inverse_mass)
        self.kernels: NutsKernels | None = None
        self.auto: _AutoCompile | None = None
        compilable = cfg.method == "nuts" and self.potential.graph is not None and compilation.is_enabled()
        if compilable and cfg.compile:
            self.kernels = self._packaged_kernels()  # this machine's package, if it has one
            if self.kernels is None and cfg.compile == "auto":
                self.auto = _AutoCompile(self, cfg.num_warmup + cfg.num_samples - self.state.iteration)
            elif self.kernels is None:
                self.kernels = self._compile_kernels(self.grad_fn)
        self.windows = adaptation_windows(cfg.num_warmup)
        self.divergences = 0
        self.calls0 = self.grad_fn.calls
        posterior = super().run(progress)
        # leave a package for the next run of this model (built after sampling, never beside it)
        auto, packaged = self.auto, bool(self.state.info.get("compiled_package"))
        if (auto is not None and auto.package_wanted and not auto.package_started) or (
                cfg.compile is True and self.kernels is not None and not packaged):
            self._start_package_build()
        return posterior

    def phases(self) -> list[Phase]:
        warmup = self.cfg.num_warmup
        return [Phase("warmup", 0, warmup), Phase("sample", warmup, warmup + self.cfg.num_samples)]

    def advance(self, phase: Phase, bar: tqdm) -> bool:
        cfg, gen = self.cfg, self.generator
        if self.auto is not None:
            self.auto.tick()
        (z, u, g), stats = _transition(self.state, self.metric, cfg, self.grad_fn, gen, self.kernels)
        state = replace(self.state, z=z, potential=u, grad=g)
        if phase.name == "warmup":
            self.metric = _adapt(state, stats, self.metric, cfg, self.windows, self.grad_fn, gen)
        else:
            k = state.iteration - cfg.num_warmup
            state.draws[:, k] = z
            for name in TransitionStats._fields:
                state.stats[name][:, k] = getattr(stats, name)
            state.stats["step_size"][:, k] = state.step_size
            state.stats["lp"][:, k] = -u
            state.chain_gradients += int(stats.num_steps.sum())
        state.iteration += 1
        self.state = state
        self.divergences += int(stats.diverging.sum()) if self.progress else 0
        bar.update(1)
        if self.progress and state.iteration % 10 == 0:
            bar.set_postfix(step=f"{float(state.step_size.mean()):.2e}", div=self.divergences, refresh=False)
        return True

    def phase_done(self, phase: Phase, seconds: float) -> None:
        state = self.state
        calls = self.grad_fn.calls - self.calls0
        if phase.name == "warmup":
            state.warmup_seconds += seconds
        else:
            state.sampling_seconds += seconds
            state.sampling_gradient_calls += calls
        state.num_gradient_calls += calls
        self.divergences, self.calls0 = 0, self.grad_fn.calls

    def interrupt_message(self) -> str:
        total = self.cfg.num_warmup + self.cfg.num_samples
        return (f"sampling interrupted after {self.state.iteration} of {total} iterations; "
                "returning the draws made so far")

    def _compile_kernels(self, counter: _Counter, state: SamplerState | None = None) -> NutsKernels | None:
        """The NUTS leaf, pair and boundary steps compiled with the captured gradient inlined;
        ``None`` (eager steps) when compilation fails. ``state``: the state whose layouts the
        kernels are built for (default the current one; its compile time is recorded there)."""
        cfg, state = self.cfg, state or self.state
        try:
            if self.potential.graph is None:
                raise ValueError("no captured gradient graph to compile")
            kernels, seconds = compile_nuts_kernels(
                self.potential.graph, state.z, state.potential, state.grad, state.step_size,
                state.inverse_mass, cfg.max_tree_depth, cfg.max_delta_energy, counter,
            )
        except CompileFailed:  # warned once by bayesact.compilation: eager steps
            return None
        except Exception as exc:  # compilation is an optimisation: fall back to eager steps
            warn_user(f"could not compile the NUTS steps ({exc!r}); running them eagerly")
            return None
        state.info["compile_seconds"] = state.info.get("compile_seconds", 0.0) + seconds
        key = self.kernels_key
        if key is not None:
            warm = compilation.compile_record(key) is not None
            compilation.record_compile(key, seconds if warm else AUTO_WARM_GUESS_SECONDS)
        return kernels

    def _script_kernels(self) -> None:
        """On the CPU, run the pair-of-leaves step as TorchScript from now on (the eager steps'
        numbers, see :data:`AUTO_SCRIPT_MIN_SECONDS`); noted in the state's info
        (``scripted_from_iteration``, ``script_seconds``). Any failure keeps the eager steps, and so
        does a run outside the main thread (tracing captures warnings, and Python's warning filters
        are process-wide: another thread's warnings could be swallowed meanwhile)."""
        cfg, state = self.cfg, self.state
        if self.kernels is not None or self.potential.graph is None or cfg.device.type != "cpu":
            return
        if threading.current_thread() is not threading.main_thread():
            return
        # called through the module, so that replacing this module's name for the Inductor path
        # (``sampler.compile_nuts_kernels``, as the policy tests do) leaves this tier alone
        try:
            kernels, seconds = compiled_steps.compile_nuts_kernels(
                self.potential.graph, state.z, state.potential, state.grad, state.step_size,
                state.inverse_mass, cfg.max_tree_depth, cfg.max_delta_energy, self.grad_fn,
                backend="torchscript",
            )
        except CompileFailed:  # warned once by bayesact.compilation: eager steps
            return
        except Exception as exc:  # an optimisation: never fail a run on it
            warn_user(f"could not script the NUTS steps ({exc!r}); running them eagerly")
            return
        self.kernels = kernels
        state.info["scripted_from_iteration"] = state.iteration
        state.info["script_seconds"] = seconds

    def _packaged_kernels(self) -> NutsKernels | None:
        """The NUTS steps from this machine's compiled package for this run (see
        :mod:`bayesact.infer.packaged`), or None (none yet, or not for this device); a found
        package is noted in the state's info (``compiled_package``)."""
        key, state, cfg = self.kernels_key, self.state, self.cfg
        if key is None or self.potential.graph is None or not compile_packages.supported(cfg.device):
            return None
        try:
            kernels = load_nuts_kernels(key, self.potential.graph, state.z, state.potential, state.grad,
                                        state.step_size, state.inverse_mass, cfg.max_tree_depth,
                                        cfg.max_delta_energy, self.grad_fn)
        except Exception as exc:  # an optimisation: never fail a run on it
            warn_user(f"could not load the compiled NUTS package ({exc!r}); running without it")
            return None
        if kernels is not None:
            state.info["compiled_package"] = True
            state.info.setdefault("compile_seconds", 0.0)
        return kernels

    def _start_package_build(self) -> bool:
        """Start a detached build of this run's compiled package (none on this machine yet);
        returns whether one is now being built."""
        key, graph, state, cfg = self.kernels_key, self.potential.graph, self.state, self.cfg
        if key is None or not isinstance(graph, torch.fx.GraphModule):
            return False
        if not compile_packages.supported(cfg.device):
            return False
        if compile_packages.building(key):
            return True
        try:
            files = build_files(graph, {"z": state.z, "potential": state.potential, "grad": state.grad,
                                        "step_size": state.step_size, "inverse_mass": state.inverse_mass},
                                cfg.max_tree_depth, cfg.max_delta_energy)
        except Exception:  # an optimisation: never fail a run on it
            return False
        return files is not None and compile_packages.start_build(key, PACKAGE_WORKER, files)

    @functools.cached_property
    def kernels_key(self) -> str | None:
        """The :func:`~bayesact.infer.compiled.nuts_kernels_key` of this run's NUTS steps (None
        without a captured gradient graph), computed once: it hashes the data, and the state's
        shape, dtype and device do not change during a run."""
        graph = self.potential.graph
        if not isinstance(graph, torch.fx.GraphModule):
            return None
        try:
            return nuts_kernels_key(graph, self.state.z, self.cfg.max_tree_depth, self.cfg.max_delta_energy)
        except Exception:  # the key is only a hint for the compile policy: never fail a run on it
            return None

    def posterior(self, interrupted: bool) -> Posterior:
        cfg, state = self.cfg, self.state
        done = max(0, state.iteration - cfg.num_warmup)
        samples, stats = self.kept(slice(0, done))
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
        compiled = "compile_seconds" in state.info
        scripted = "scripted_from_iteration" in state.info and not compiled
        return self.assemble(samples, stats, {
            "nonfinite_grad": nonfinite,
            "nonfinite_grad_sites": per_site,
            "method": cfg.method,
            "potential_mode": self.potential.mode + ("+compiled_leaf" if compiled else "")
            + ("+scripted_leaf" if scripted else ""),
            "compile_seconds": state.info.get("compile_seconds", 0.0),
            "compiled_from_iteration": state.info.get("compiled_from_iteration"),
            "scripted_from_iteration": state.info.get("scripted_from_iteration"),
            "script_seconds": state.info.get("script_seconds", 0.0),
            "compiled_package": bool(state.info.get("compiled_package", False)),
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
        })


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
    compile: bool | Literal["auto"] = "auto",
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
        compile: compile the NUTS steps (or, for HMC, the captured gradient) with TorchInductor,
            through :func:`bayesact.compilation.compiled` (verified against eager, one warning and
            the eager path on failure; ``BAYESACT_COMPILE=0`` turns it off). ``True`` compiles
            before sampling; ``"auto"`` (NUTS) samples at once on the eager path and, when the
            run is long enough to amortise it (over 60 s eagerly, or 2.25x the recorded
            compile time when this machine compiled the same steps before: Inductor's
            persistent cache then holds them), compiles in the background and switches when
            the compiled steps are verified (HMC: eager). Draws have the same
            distribution on either path; on CPU with a ``seed``, ``compile=False`` is
            bit-reproducible, ``True`` reproducible with the same compiled code, and ``"auto"``
            not bit-for-bit (the switch iteration depends on timing).
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
    if method not in ("nuts", "hmc"):
        raise ValueError(f"method must be 'nuts' or 'hmc', got {method!r}")
    if compile not in (True, False, "auto"):
        raise ValueError(f"compile must be True, False or 'auto', got {compile!r}")
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
    if chain_method == "sequential" and checkpoint is not None:
        raise ValueError("checkpoint= needs chain_method='vectorized'")
    args, model_kwargs, device_, dtype_, seed, path = prepare_run(
        "mcmc", model, args, model_kwargs, kwargs, MCMC_OPTIONS, device=device, dtype=dtype, seed=seed,
        checkpoint=checkpoint,
    )
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
        fixed: dict[str, Any] = dict(
            method=method, num_warmup=num_warmup, num_samples=num_samples, target_accept=float(target_accept),
            max_tree_depth=max_tree_depth, dense_mass=dense_mass, num_steps=num_steps, step_size=step_size,
            dtype=dtype_, device=device_, trajectory_length=trajectory_length,
            checkpoint_every=checkpoint_every, capture=bool(capture),
            compile=compile if compile == "auto" else bool(compile),
            sync_every=sync_every, max_delta_energy=max_delta_energy,
            adapt_step_size=bool(adapt_step_size), adapt_mass_matrix=bool(adapt_mass_matrix),
        )
        if chain_method == "sequential":
            post = _sequential(model, args, model_kwargs, init, progress, [
                MCMCConfig(num_chains=1, seed=seed + chain, **fixed) for chain in range(num_chains)
            ])
            warn_divergences(post.sample_stats["diverging"])
            return post
        cfg = MCMCConfig(num_chains=num_chains, seed=seed, **fixed)
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
    potential = _potential(model, args, kwargs, cfg)
    check_observed(potential)
    if chain is None:
        check_init(potential, init, cfg.num_chains)
    else:  # sequential: init is checked against all chains, then this chain's values are taken
        check_init(potential, init, chain[1])
        init = _chain_slice(potential, init, *chain)
    gen = torch.Generator(device=cfg.device).manual_seed(cfg.seed)
    state = _new_state(potential, cfg, init, gen)
    return _Run(potential, cfg, state, model, args, kwargs, checkpoint).run(progress)


def _potential(model: Callable, args: tuple, kwargs: dict, cfg: MCMCConfig) -> Potential:
    return build_potential(
        model, args, kwargs, dtype=cfg.dtype, device=cfg.device, num_chains=cfg.num_chains,
        capture=cfg.capture, compile=cfg.compile is True and cfg.method == "hmc",
    )


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
    post = resume_run(_Run, payload, path, model, args, model_kwargs, progress)
    warn_divergences(post.sample_stats["diverging"])
    return post


register_format(MCMC_FORMAT, resume_mcmc)
