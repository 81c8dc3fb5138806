"""Scale-adapted stochastic-gradient HMC over minibatches, all chains at once.

Springenberg, Klein, Falkner & Hutter (2016), "Bayesian Optimization with Robust Bayesian
Neural Networks", NeurIPS (built on Chen, Fox & Guestrin 2014, "Stochastic Gradient
Hamiltonian Monte Carlo", ICML). With the minibatch gradient g = ∇Ũ(θ) (see
:mod:`bayesact.infer.minibatch`), step size ε and momentum decay (friction) α, one step is

    v ← v - ε² M⁻¹ g - α v + N(0, 2 ε² α M⁻¹ - ε⁴),    θ ← θ + v,

with a diagonal preconditioner M⁻¹ = 1/√V̂ (the noise variance clamped at 1e-16, as in the
authors' code). During burn-in V̂ ≈ E[g²] is a running average with an adaptive window τ:
r = 1/(τ + 1), τ ← τ + 1 - τ ĝ²/V̂, ĝ ← (1 - r) ĝ + r g, V̂ ← (1 - r) V̂ + r g² (ĝ, V̂, τ start
at 1); after burn-in M⁻¹ is frozen. There is no Metropolis correction: the stationary
distribution is exact only as ε → 0.

Sites listed in the model's ``gibbs_sites`` are held out of the dynamics and redrawn every
``gibbs_every`` steps by ``model.gibbs_update`` (e.g. the per-layer variances of a
hierarchical BNN prior, whose conditionals are inverse-gamma).
"""

from __future__ import annotations

import math
import os
import warnings
from collections.abc import Callable
from dataclasses import dataclass
from typing import Any, ClassVar, cast

import torch
from tqdm.auto import tqdm

from bayesact.infer.arguments import (
    check_init,
    check_int,
    check_observed,
    check_positive,
    keyword_options,
    move_to,
    nonfinite_arguments,
    prepare_run,
    run_context,
)
from bayesact.infer.checkpoint import SGHMC_FORMAT, register_format
from bayesact.infer.minibatch import MinibatchPotential
from bayesact.infer.phases import Phase, warn_user
from bayesact.infer.posterior import Posterior
from bayesact.infer.protocols import GibbsHook
from bayesact.infer.replay import replay_sites
from bayesact.infer.run import RunConfig, RunLoop, RunState, resume_run
from bayesact.infer.sites import is_deterministic

__all__ = ["SGHMCConfig", "SGHMCState", "adapt_preconditioner", "resume_sghmc", "sghmc", "sghmc_step"]


@dataclass(kw_only=True)
class SGHMCConfig(RunConfig):
    """Everything that fixes an SGHMC run besides the model and its data."""

    num_burnin: int
    thinning: int
    batch_size: int
    step_size: float
    momentum_decay: float
    num_discard: int
    gibbs_every: int
    clip_grad_norm: float | None = None
    predict: tuple | None = None

    @property
    def num_steps(self) -> int:
        return self.num_burnin + self.num_samples * self.thinning


@dataclass(kw_only=True)
class SGHMCState(RunState):
    """The complete state of an SGHMC run between two steps (what a checkpoint stores)."""

    v: torch.Tensor  # (C, D) velocity
    tau: torch.Tensor  # (C, D) adaptation window
    grad_avg: torch.Tensor  # (C, D) running mean of g
    grad_sq_avg: torch.Tensor  # (C, D) running mean of g², V̂
    burnin_seconds: float = 0.0


def sghmc_step(
    z: torch.Tensor,
    v: torch.Tensor,
    grad: torch.Tensor,
    inverse_mass: torch.Tensor,
    noise: torch.Tensor,
    step_size: float,
    momentum_decay: float,
    moving: torch.Tensor | None = None,
) -> tuple[torch.Tensor, torch.Tensor]:
    """One scale-adapted SGHMC update (Springenberg et al. 2016); returns the new (z, v).

    v ← v - ε² M⁻¹ g - α v + √(max(2 ε² α M⁻¹ - ε⁴, 1e-16)) ξ,  θ ← θ + v, with ξ = ``noise``
    ~ N(0, I). ``moving`` (D,) masks the coordinates that follow the dynamics (0 for Gibbs sites).
    """
    eps2 = step_size * step_size
    variance = (2.0 * eps2 * momentum_decay) * inverse_mass - eps2 * eps2
    kick = torch.addcmul(variance.clamp_(min=1e-16).sqrt_().mul_(noise), inverse_mass, grad, value=-eps2)
    v = torch.add(kick, v, alpha=1.0 - momentum_decay)
    if moving is not None:
        v = v * moving
    return z + v, v


def adapt_preconditioner(
    tau: torch.Tensor, grad_avg: torch.Tensor, grad_sq_avg: torch.Tensor, grad: torch.Tensor
) -> tuple[torch.Tensor, torch.Tensor, torch.Tensor]:
    """One burn-in update of Springenberg et al.'s running averages with adaptive window τ.

    r = 1/(τ + 1); τ ← τ + 1 - τ ĝ²/V̂; ĝ ← (1 - r) ĝ + r g; V̂ ← (1 - r) V̂ + r g².
    Returns the new (τ, ĝ, V̂); the preconditioner is M⁻¹ = 1/√V̂.
    """
    r = (tau + 1.0).reciprocal()
    new_tau = tau * (1.0 - grad_avg.square() / grad_sq_avg) + 1.0
    return new_tau, torch.lerp(grad_avg, grad, r), torch.lerp(grad_sq_avg, grad.square(), r)


class _SGHMCRun(RunLoop):
    """One vectorized SGHMC run: burn-in (adapting M⁻¹), then sampling every ``thinning`` steps."""

    format = SGHMC_FORMAT
    config_type = SGHMCConfig
    state_type = SGHMCState
    bar_options: ClassVar[dict[str, Any]] = {"mininterval": 0.5}
    cfg: SGHMCConfig
    state: SGHMCState

    def __init__(
        self, mb: MinibatchPotential, cfg: SGHMCConfig, state: SGHMCState, model: Callable[..., Any],
        args: tuple, kwargs: dict, checkpoint: str | None,
    ) -> None:
        super().__init__(mb.potential, cfg, state, model, args, kwargs, checkpoint)
        self.mb = mb
        pot = mb.potential
        self.gibbs_sites = [s for s in pot.sites if s.name in _gibbs_names(model)]
        moving = torch.ones(pot.dim, dtype=cfg.dtype, device=cfg.device)
        for s in self.gibbs_sites:
            moving[s.offset : s.offset + s.size] = 0.0
        self.moving = moving if self.gibbs_sites else None
        self.first_bad = torch.zeros((), dtype=torch.long, device=cfg.device)
        self.nonfinite_at: int | None = None
        self.inverse_mass = state.grad_sq_avg.rsqrt()

    @classmethod
    def rebuild(
        cls, cfg: SGHMCConfig, state: SGHMCState, model: Callable[..., Any], args: tuple, kwargs: dict,
        checkpoint: str,
    ) -> _SGHMCRun:
        mb = MinibatchPotential(model, args, kwargs, cfg.batch_size, cfg.num_chains, cfg.dtype, cfg.device,
                                capture=cfg.capture)
        return cls(mb, cfg, state, model, args, kwargs, checkpoint)

    # -- pieces of a step ------------------------------------------------------------------
    def _gradient(self, gen: torch.Generator) -> tuple[torch.Tensor, torch.Tensor]:
        u, g = self.mb.value_and_grad(self.state.z, self.mb.draw_indices(gen))
        if self.moving is not None:
            g = g * self.moving
        clip = self.cfg.clip_grad_norm
        if clip is not None:
            norm = torch.linalg.vector_norm(g, dim=-1, keepdim=True)
            g = g * (clip / norm.clamp(min=clip))
        return u, g

    def _gibbs(self, z: torch.Tensor, gen: torch.Generator) -> torch.Tensor:
        """``z`` with the Gibbs sites redrawn by ``model.gibbs_update`` given the other sites."""
        pot, z = self.mb.potential, z.clone()
        values = {k: v.detach() for k, v in pot.constrain(z).items()}
        seed = int(torch.randint(0, 2**62, (), generator=gen, device=gen.device))
        devices = [] if self.cfg.device.type == "cpu" else [self.cfg.device]
        with torch.random.fork_rng(devices=devices), torch.no_grad():
            torch.manual_seed(seed)
            new = cast(GibbsHook, self.model).gibbs_update(values)  # checked by _check_gibbs
        for s in self.gibbs_sites:
            if s.name not in new:
                raise ValueError(f"gibbs_update did not return a value for site '{s.name}'")
            x = torch.as_tensor(new[s.name], dtype=self.cfg.dtype, device=self.cfg.device)
            u = s.transform.inv(x.expand(self.cfg.num_chains, *s.shape))
            z[:, s.offset : s.offset + s.size] = u.reshape(self.cfg.num_chains, s.size)
        return z

    def _record(self, index: int, z: torch.Tensor, u: torch.Tensor, g: torch.Tensor) -> None:
        st = self.state
        st.draws[:, index] = z
        st.stats["lp"][:, index] = -u
        st.stats["step_size"][:, index] = self.cfg.step_size
        st.stats["grad_norm"][:, index] = torch.linalg.vector_norm(g, dim=-1)

    # -- the loop --------------------------------------------------------------------------
    def phases(self) -> list[Phase]:
        cfg = self.cfg
        return [Phase("burn-in", 0, cfg.num_burnin, "sghmc burn-in"),
                Phase("sampling", cfg.num_burnin, cfg.num_steps, "sghmc sampling")]

    def advance(self, phase: Phase, bar: tqdm) -> bool:
        st = self.state
        burnin = phase.name == "burn-in"
        self.nonfinite_at = self._step(self.generator, self.inverse_mass, burnin)
        if self.nonfinite_at is not None:
            return False
        if burnin:
            self.inverse_mass = st.grad_sq_avg.rsqrt()
        if st.iteration % 100 == 0 or st.iteration == phase.end:
            bar.update(st.iteration - phase.begin - bar.n)
        return True

    def phase_done(self, phase: Phase, seconds: float) -> None:
        if phase.name == "burn-in":
            self.state.burnin_seconds += seconds
        else:
            self.state.sampling_seconds += seconds

    def interrupt_message(self) -> str:
        return (f"sghmc interrupted at step {self.state.iteration} of {self.cfg.num_steps}: returning the "
                "draws so far")

    def _step(self, gen: torch.Generator, inverse_mass: torch.Tensor, burnin: bool) -> int | None:
        """One SGHMC step (and Gibbs / record when due); the step index if it went non-finite.

        The state is replaced only when the step completes, so an interrupted step is redone
        on resume from the same random stream (see :class:`~bayesact.infer.run.RunLoop`)."""
        cfg, st = self.cfg, self.state
        u, g = self._gradient(gen)
        adapted = adapt_preconditioner(st.tau, st.grad_avg, st.grad_sq_avg, g) if burnin else None
        noise = torch.randn(st.z.shape, generator=gen, dtype=cfg.dtype, device=cfg.device)
        z, v = sghmc_step(st.z, st.v, g, inverse_mass, noise, cfg.step_size, cfg.momentum_decay,
                          self.moving)
        step = st.iteration + 1
        if self.gibbs_sites and step % cfg.gibbs_every == 0:
            z = self._gibbs(z, gen)
        # the first non-finite step (0: none) is kept on the device and read only when recording
        # and every 100 steps, so burn-in does not run on NaNs and there is no sync per step
        bad = ~(torch.isfinite(u).all() & torch.isfinite(z).all())
        self.first_bad = torch.where(bad & (self.first_bad == 0), step, self.first_bad)
        after = step - cfg.num_burnin
        record = after > 0 and after % cfg.thinning == 0
        if (record or step % 100 == 0) and (first := int(self.first_bad)):
            return first
        if record:
            self._record(after // cfg.thinning - 1, z, u, g)
        if adapted is not None:
            st.tau, st.grad_avg, st.grad_sq_avg = adapted
        st.z, st.v, st.iteration = z, v, step
        return None

    def posterior(self, interrupted: bool) -> Posterior:
        cfg, st, pot = self.cfg, self.state, self.potential
        if self.nonfinite_at is not None:
            warn_user(
                f"sghmc stopped at step {self.nonfinite_at}: a chain's potential or position became "
                "non-finite (lower step_size or set clip_grad_norm); returning the draws before it"
            )
        done = max(0, min(cfg.num_samples, (st.iteration - cfg.num_burnin) // cfg.thinning))
        samples, stats = self.kept(slice(min(cfg.num_discard, done), done))
        posterior = self.assemble(samples, stats, {
            "method": "sghmc",
            "potential_mode": pot.mode,
            "minibatch": "per_chain" if self.mb.per_chain else "shared",
            "likelihood_scale": pot.likelihood_scale,
            "scaled_sites": sorted(pot.scaled_sites),
            "gibbs_sites": [s.name for s in self.gibbs_sites],
            "num_burnin": cfg.num_burnin,
            "num_samples": cfg.num_samples,
            "num_discard": cfg.num_discard,
            "thinning": cfg.thinning,
            "draws_done": done,
            "steps_done": st.iteration,
            "interrupted": interrupted,
            "nonfinite_at": self.nonfinite_at,
            "burnin_seconds": st.burnin_seconds,
            "sampling_seconds": st.sampling_seconds,
            "inverse_mass": st.grad_sq_avg.rsqrt().detach().cpu(),
        })
        if cfg.predict is not None and posterior.num_draws > 0:
            site, *test_args = cfg.predict
            latent = {s.name: samples[s.name] for s in pot.sites}
            out = replay_sites(self.model, tuple(test_args), self.kwargs, latent)["deterministic"]
            posterior.samples[site] = out[site]
        return posterior


# ------------------------------------------------------------------------------------------
# setup
# ------------------------------------------------------------------------------------------
def _gibbs_names(model: Any) -> tuple[str, ...]:
    return tuple(model.gibbs_sites or ()) if isinstance(model, GibbsHook) else ()


def _check_gibbs(model: Any, mb: MinibatchPotential) -> None:
    if hasattr(model, "gibbs_sites") and not isinstance(model, GibbsHook):
        raise ValueError("model has gibbs_sites but no callable gibbs_update(values) -> dict (GibbsHook)")
    names = _gibbs_names(model)
    if not names:
        return
    latent = {s.name for s in mb.potential.sites}
    missing = [n for n in names if n not in latent]
    if missing:
        raise ValueError(f"gibbs_sites {missing} are not latent sites of the model")
    if set(names) == latent:
        raise ValueError("gibbs_sites cover every latent site: nothing left for SGHMC dynamics")


def _check_predict(predict: Any, model: Callable[..., Any], kwargs: dict, device: torch.device,
                   dtype: torch.dtype) -> tuple | None:
    if predict is None:
        return None
    if not isinstance(predict, tuple) or not predict or not isinstance(predict[0], str):
        raise ValueError("predict must be a tuple (site_name, *test_args), e.g. ('f', x_test)")
    site, *test_args = predict
    test_args = [move_to(a, device, dtype) for a in test_args]
    tr = _trace_quiet(model, tuple(test_args), kwargs)
    node = tr.nodes.get(site)
    if node is None or not is_deterministic(node):
        raise ValueError(f"predict: '{site}' is not a pyro.deterministic site of the model")
    return (site, *test_args)


def _trace_quiet(model: Callable[..., Any], args: tuple, kwargs: dict) -> Any:
    from bayesact.infer.potential import trace_model

    with warnings.catch_warnings():
        warnings.simplefilter("ignore", category=UserWarning)
        return trace_model(model, args, kwargs)


def _new_state(mb: MinibatchPotential, cfg: SGHMCConfig, init: Any, gen: torch.Generator) -> SGHMCState:
    pot = mb.potential
    c, d = cfg.num_chains, pot.dim
    check_init(pot, init, c)
    z = pot.unconstrain(init, (c,)) if isinstance(init, dict) else cfg.uniform_start(d, gen)
    ones = torch.ones(c, d, dtype=cfg.dtype, device=cfg.device)
    return SGHMCState(
        iteration=0, z=z, v=torch.zeros_like(z), tau=ones.clone(), grad_avg=ones.clone(),
        grad_sq_avg=ones.clone(), generator_state=gen.get_state(), draws=cfg.empty_draws(d),
        stats=cfg.empty_stats(("lp", "step_size", "grad_norm")),
    )


# ------------------------------------------------------------------------------------------
# public API
# ------------------------------------------------------------------------------------------
def sghmc(
    model: Callable[..., Any],
    *args: Any,
    num_chains: int = 4,
    num_burnin: int = 2000,
    num_samples: int = 40,
    thinning: int = 200,
    batch_size: int = 32,
    step_size: float = 1e-2,
    momentum_decay: float = 1e-2,
    num_discard: int = 0,
    gibbs_every: int = 1000,
    seed: int | None = None,
    device: str | torch.device | None = None,
    dtype: torch.dtype | None = None,
    progress: bool = True,
    checkpoint: str | os.PathLike | None = None,
    predict: tuple | None = None,
    init: dict[str, Any] | str | None = None,
    clip_grad_norm: float | None = None,
    checkpoint_every: int = 1000,
    capture: bool = True,
    model_kwargs: dict[str, Any] | None = None,
    **kwargs: Any,
) -> Posterior:
    """Sample a Pyro model's posterior with scale-adapted SGHMC on minibatches, chains vectorized.

    Springenberg et al. (2016), NeurIPS: v ← v - ε² M⁻¹ ∇Ũ - α v + N(0, 2ε²α M⁻¹ - ε⁴),
    θ ← θ + v, with M⁻¹ = 1/√V̂ adapted during burn-in from running averages of the gradient
    and its square (see :mod:`bayesact.infer.sghmc`). Ũ is the full-data potential estimated
    on a minibatch: the log-likelihood of the data-dependent observed sites is scaled by N/B
    (:mod:`bayesact.infer.minibatch`). The positional tensor arguments whose first dimension
    equals N (the length of the first one) are minibatched together; keyword arguments that
    are not options below go to the model unchanged (never minibatched).

    Args:
        model: a Pyro model with continuous, global latent sites; if it has ``gibbs_sites``
            and ``gibbs_update(values) -> values`` (values with a leading chain dimension,
            constrained space), those sites are redrawn by ``gibbs_update`` instead.
        *args: model arguments; the data (x, y, ...) must be positional tensors.
        num_chains: number of chains (>= 1), run as one batch.
        num_burnin: steps that adapt M⁻¹ (discarded).
        num_samples: draws collected per chain, one every ``thinning`` steps after burn-in.
        thinning: steps between two collected draws.
        batch_size: minibatch size B (1 <= B <= N).
        step_size: ε (the paper's learning rate; 1e-2 in the functional-prior paper).
        momentum_decay: friction α (1e-2 in the paper).
        num_discard: the first collected draws to drop (the posterior has
            ``num_samples - num_discard`` draws per chain).
        gibbs_every: steps between two Gibbs updates of ``model.gibbs_sites``.
        seed: seed of the sampler's random stream (minibatches, noise, Gibbs draws).
        device: device (default: that of the model's tensor arguments).
        dtype: floating type of the whole run (default: that of the model's first floating
            tensor argument); as in :func:`~bayesact.infer.mcmc`, an ``nn.Module`` model is
            cast in place and the model runs with ``dtype`` as torch's default type.
        progress: show a tqdm bar per phase (burn-in, sampling) when stderr is a terminal.
        checkpoint: file to save the state to every ``checkpoint_every`` steps and at the end
            or on interruption (its directory must exist); :func:`~bayesact.infer.resume`
            continues from it.
        predict: ``(site, *test_args)``: at the end the model is replayed at ``test_args``
            for every draw and ``posterior.samples[site]`` holds the deterministic ``site``
            there (e.g. ``("f", x_test)`` for a BNN's outputs), so ArviZ reports R-hat and
            ESS on function values rather than on non-identifiable weights.
        init: ``None`` (uniform(-2, 2) in unconstrained space) or a dict of constrained values
            of every latent site, each with the site's shape or (num_chains, *shape).
        clip_grad_norm: clip each chain's ∇Ũ to this norm (the authors clip the gradient of
            Ũ/N at 100, i.e. ``100 * N`` here); ``None``: no clipping.
        checkpoint_every: steps between two checkpoint saves (>= 1).
        capture: capture the batched gradient as a graph (see :func:`~bayesact.infer.mcmc`).
        model_kwargs: keyword arguments of the model given as a dict (for names that clash
            with the options above); merged with ``**kwargs``.
        **kwargs: keyword arguments of the model.

    Returns:
        A :class:`~bayesact.infer.Posterior` with samples shaped (chain, draw, ...) and
        ``sample_stats`` ``lp`` (minus the minibatch potential Ũ at the step that made the
        draw), ``step_size`` and ``grad_norm``. A KeyboardInterrupt returns the draws so far.

    Raises:
        ValueError: bad ``num_chains``, ``batch_size`` (not in [1, N]), ``thinning``,
            ``num_discard``, ``step_size``, ``momentum_decay``, ``clip_grad_norm``, ``device``,
            ``init``, a ``checkpoint`` whose directory does not exist, no minibatchable
            ``args``, or a bad ``predict``.
        TypeError: a keyword argument that is neither an option nor a parameter of the model.
    """
    check_int("num_chains", num_chains, 1)
    check_int("num_burnin", num_burnin, 0)
    check_int("num_samples", num_samples, 1)
    check_int("thinning", thinning, 1)
    check_int("num_discard", num_discard, 0)
    check_int("gibbs_every", gibbs_every, 1)
    check_int("checkpoint_every", checkpoint_every, 1)
    if num_discard >= num_samples:
        raise ValueError(f"num_discard must be < num_samples = {num_samples}, got {num_discard}")
    if not (isinstance(step_size, (int, float)) and math.isfinite(step_size) and step_size > 0):
        raise ValueError(f"step_size must be a positive finite number, got {step_size!r}")
    if not (isinstance(momentum_decay, (int, float)) and 0 < momentum_decay < 1):
        raise ValueError(f"momentum_decay must lie in (0, 1), got {momentum_decay!r}")
    if clip_grad_norm is not None:
        clip_grad_norm = check_positive("clip_grad_norm", clip_grad_norm)
    args, model_kwargs, device_, dtype_, seed, path = prepare_run(
        "sghmc", model, args, model_kwargs, kwargs, SGHMC_OPTIONS, device=device, dtype=dtype, seed=seed,
        checkpoint=checkpoint,
    )
    with run_context(model, dtype_, device_):
        cfg = SGHMCConfig(
            num_chains=num_chains, num_burnin=num_burnin, num_samples=num_samples, thinning=thinning,
            batch_size=batch_size, step_size=float(step_size), momentum_decay=float(momentum_decay),
            num_discard=num_discard, gibbs_every=gibbs_every, seed=seed, dtype=dtype_, device=device_,
            clip_grad_norm=clip_grad_norm, checkpoint_every=checkpoint_every, capture=bool(capture),
            predict=_check_predict(predict, model, model_kwargs, device_, dtype_),
        )
        mb = MinibatchPotential(model, args, model_kwargs, batch_size, num_chains, dtype_, device_,
                                capture=cfg.capture)
        check_observed(mb.potential)
        bad = nonfinite_arguments(tuple(a if i in mb.positions else None for i, a in enumerate(args)), {})
        if bad:
            raise ValueError(
                f"the minibatched data hold non-finite values: {', '.join(bad)}; remove or impute "
                "them before sampling"
            )
        _check_gibbs(model, mb)
        gen = torch.Generator(device=device_).manual_seed(seed)
        state = _new_state(mb, cfg, init, gen)
        return _SGHMCRun(mb, cfg, state, model, args, model_kwargs, path).run(progress)


SGHMC_OPTIONS = keyword_options(sghmc)


def resume_sghmc(
    payload: dict[str, Any], path: str, model: Callable[..., Any], args: tuple, model_kwargs: dict,
    progress: bool,
) -> Posterior:
    """Continue the :func:`sghmc` run stored in ``payload`` (see :func:`bayesact.infer.resume`, which
    has moved ``args`` and ``model_kwargs`` to the run's device and dtype to check them)."""
    return resume_run(_SGHMCRun, payload, path, model, args, model_kwargs, progress)

register_format(SGHMC_FORMAT, resume_sghmc)
