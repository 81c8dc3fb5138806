"""The run loop shared by :func:`~bayesact.infer.mcmc` and :func:`~bayesact.infer.sghmc`.

A run is a configuration (:class:`RunConfig`: what fixes it besides model and data), a state
(:class:`RunState`: everything that changes between two iterations, what a checkpoint
stores) and a :class:`RunLoop` that drives it: the phases (adaptation, then sampling) with a
progress bar and a timer each (:func:`~bayesact.infer.phases.run_phases`), a checkpoint every
``checkpoint_every`` iterations and at the end (:mod:`bayesact.infer.checkpoint`: atomic, plain
data), a KeyboardInterrupt that keeps the draws made so far, and the
:class:`~bayesact.infer.Posterior` assembled from the kept draws.

An iteration counts as done when the runner advances ``state.iteration``. An interrupt inside
an iteration puts the random stream back where the iteration started, so a run resumed from
its checkpoint redoes that iteration with the same random numbers and gives the draws of an
uninterrupted run (on CPU). :func:`resume_run` continues a checkpointed run of any runner.
"""

from __future__ import annotations

import math
from collections.abc import Callable
from dataclasses import dataclass, field
from typing import Any, ClassVar

import torch
from tqdm.auto import tqdm

from bayesact.infer.arguments import run_context
from bayesact.infer.checkpoint import check_latent_sites, checkpoint_payload, from_plain, save_checkpoint
from bayesact.infer.phases import Phase, run_phases, warn_user
from bayesact.infer.posterior import Posterior
from bayesact.infer.potential import Potential
from bayesact.infer.sites import is_deterministic

__all__ = ["RunConfig", "RunLoop", "RunState", "resume_run"]


@dataclass(kw_only=True)
class RunConfig:
    """The options every run has (a runner's config adds its own)."""

    num_chains: int
    num_samples: int
    seed: int
    dtype: torch.dtype
    device: torch.device
    checkpoint_every: int
    capture: bool = True

    def empty_draws(self, dim: int) -> torch.Tensor:
        """The (C, S, D) draw buffer of a new run, NaN until filled."""
        return torch.full((self.num_chains, self.num_samples, dim), math.nan, dtype=self.dtype,
                          device=self.device)

    def empty_stats(self, names: tuple[str, ...]) -> dict[str, torch.Tensor]:
        """The (C, S) statistics buffers of a new run, NaN until filled."""
        shape = (self.num_chains, self.num_samples)
        return {name: torch.full(shape, math.nan, dtype=self.dtype, device=self.device) for name in names}

    def uniform_start(self, dim: int, generator: torch.Generator) -> torch.Tensor:
        """Stan's default start: uniform(-2, 2) in unconstrained space, (C, D)."""
        shape = (self.num_chains, dim)
        return torch.rand(shape, generator=generator, dtype=self.dtype, device=self.device) * 4 - 2


@dataclass(kw_only=True)
class RunState:
    """What every run's state holds between two iterations (a runner's state adds its own)."""

    iteration: int
    z: torch.Tensor  # (C, D) unconstrained position
    generator_state: torch.Tensor
    draws: torch.Tensor  # (C, S, D) unconstrained
    stats: dict[str, torch.Tensor]  # (C, S) each
    sampling_seconds: float = 0.0
    info: dict[str, Any] = field(default_factory=dict)


class RunLoop:
    """Drives one vectorized run: phases, interruption, checkpoints, the posterior.

    A runner subclasses it and provides :meth:`phases`, :meth:`advance` (one iteration),
    :meth:`phase_done`, :meth:`interrupt_message` and :meth:`posterior`, and the classmethod
    :meth:`rebuild` that :func:`resume_run` calls.
    """

    format: ClassVar[str]
    config_type: ClassVar[type[RunConfig]]
    state_type: ClassVar[type[RunState]]
    bar_options: ClassVar[dict[str, Any]] = {}

    def __init__(
        self,
        potential: Potential,
        cfg: RunConfig,
        state: RunState,
        model: Callable[..., Any],
        args: tuple,
        kwargs: dict,
        checkpoint: str | None,
    ) -> None:
        self.potential = potential
        self.cfg = cfg
        self.state = state
        self.model = model
        self.args = args
        self.kwargs = kwargs
        self.checkpoint = checkpoint
        self.generator = torch.Generator(device=cfg.device)
        self.generator.set_state(state.generator_state)

    # -- what a runner provides ------------------------------------------------------------
    @classmethod
    def rebuild(
        cls, cfg: Any, state: Any, model: Callable[..., Any], args: tuple, kwargs: dict, checkpoint: str
    ) -> RunLoop:
        """The run of ``cfg`` continued from ``state`` (for :func:`resume_run`)."""
        raise NotImplementedError

    def phases(self) -> list[Phase]:
        raise NotImplementedError

    def advance(self, phase: Phase, bar: tqdm) -> bool:
        """One iteration of ``phase``; ``False`` stops the run (no final checkpoint)."""
        raise NotImplementedError

    def phase_done(self, phase: Phase, seconds: float) -> None:
        """Book the time spent in ``phase`` (also when it was interrupted)."""
        raise NotImplementedError

    def interrupt_message(self) -> str:
        raise NotImplementedError

    def posterior(self, interrupted: bool) -> Posterior:
        raise NotImplementedError

    # -- the loop --------------------------------------------------------------------------
    def run(self, progress: bool) -> Posterior:
        """Run the remaining iterations and return the posterior of the draws kept."""
        return self.posterior(self.drive(progress))

    def drive(self, progress: bool) -> bool:
        """Run the phases to their end, or until :meth:`advance` stops or Ctrl-C; returns
        whether a KeyboardInterrupt ended the run. The checkpoint is written every
        ``checkpoint_every`` iterations and at the end unless :meth:`advance` stopped the run."""
        gen = self.generator
        start: tuple[int, torch.Tensor] | None = None  # (iteration, random stream) of the current step

        def step(phase: Phase, bar: tqdm) -> bool:
            nonlocal start
            start = (self.state.iteration, gen.get_state())
            if not self.advance(phase, bar):
                return False
            if self.checkpoint and self.state.iteration % self.cfg.checkpoint_every == 0:
                self.save()
            return True

        interrupted = False
        try:
            completed = run_phases(self.phases(), lambda: self.state.iteration, step, self.phase_done,
                                   progress, **self.bar_options)
        except KeyboardInterrupt:
            interrupted, completed = True, False
            if start is not None and start[0] == self.state.iteration:  # the unfinished step is redone
                gen.set_state(start[1])
            saved = f" (checkpoint saved to {self.checkpoint})" if self.checkpoint else ""
            warn_user(self.interrupt_message() + saved)
        self.state.generator_state = gen.get_state()
        if self.checkpoint and (completed or interrupted):
            self.save()
        return interrupted

    def save(self) -> None:
        """Write the checkpoint (configuration, state, model reference; plain data only)."""
        self.state.generator_state = self.generator.get_state()
        payload = checkpoint_payload(self.format, self.cfg, self.state, self.model, self.args, self.kwargs,
                                     self.latent_shapes())
        save_checkpoint(str(self.checkpoint), payload)

    def latent_shapes(self) -> dict[str, Any]:
        return {s.name: s.shape for s in self.potential.sites}

    # -- the result ------------------------------------------------------------------------
    def kept(self, keep: slice) -> tuple[dict[str, torch.Tensor], dict[str, torch.Tensor]]:
        """The draws ``keep`` of every chain in constrained space, and their statistics."""
        samples = {k: v.detach() for k, v in self.potential.constrain(self.state.draws[:, keep]).items()}
        return samples, {k: v[:, keep].clone() for k, v in self.state.stats.items()}

    def assemble(
        self, samples: dict[str, torch.Tensor], stats: dict[str, torch.Tensor], info: dict[str, Any]
    ) -> Posterior:
        """The posterior of ``samples`` with the model's deterministic sites replayed; ``info``
        between the entries every run has (engine; seed, checkpoint)."""
        info = {"engine": "bayesact", **info, "seed": self.cfg.seed, "checkpoint": self.checkpoint}
        posterior = Posterior(samples, stats, model=self.model, args=self.args, kwargs=self.kwargs,
                              observed=self.potential.observed, info=info)
        if any(is_deterministic(s) for s in self.potential.prior_trace.nodes.values()):
            posterior.add_deterministic_sites()  # nothing to replay without draws
        return posterior


def resume_run(
    loop: type[RunLoop], payload: dict[str, Any], path: str, model: Callable[..., Any], args: tuple,
    kwargs: dict, progress: bool,
) -> Posterior:
    """Continue the run of ``loop``'s kind stored in ``payload`` (see :func:`bayesact.infer.resume`,
    which has checked the data and moved ``args`` and ``kwargs`` to the run's device and dtype);
    refuses a model whose latent sites differ from the checkpointed run's."""
    cfg = from_plain(loop.config_type, payload["config"])
    with run_context(model, cfg.dtype, cfg.device):
        run = loop.rebuild(cfg, from_plain(loop.state_type, payload["state"]), model, args, kwargs, path)
        check_latent_sites(payload, run.latent_shapes(), path)
        return run.run(progress)

