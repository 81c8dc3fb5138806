"""The run loop shared by mcmc and sghmc, driven by a toy runner (a Gaussian random walk).

Checked: an interrupt inside an iteration puts the random stream back, so a run resumed from its
checkpoint gives exactly the draws of an uninterrupted run; checkpoints every ``checkpoint_every``
iterations and at the end; a runner that stops (``advance`` returns False) writes no final one.
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import Any

import pyro
import pyro.distributions as dist
import pytest
import torch

from bayesact.infer.checkpoint import load_checkpoint
from bayesact.infer.phases import Phase
from bayesact.infer.posterior import Posterior
from bayesact.infer.potential import Potential
from bayesact.infer.run import RunConfig, RunLoop, RunState, resume_run

DT = torch.float64
FORMAT = "tests.toy-walk/1"


def walk_model() -> None:
    pyro.sample("x", dist.Normal(torch.zeros(2, dtype=DT), 1.0).to_event(1))


@dataclass(kw_only=True)
class WalkConfig(RunConfig):
    num_burnin: int


class Walk(RunLoop):
    """z ← z + N(0, 1) per iteration; every sampling iteration is a draw. ``raise_at``: Ctrl-C
    inside that iteration, after its random numbers are drawn; ``stop_at``: ``advance`` stops."""

    format = FORMAT
    config_type = WalkConfig
    state_type = RunState
    cfg: WalkConfig
    raise_at: int | None = None
    stop_at: int | None = None

    def __init__(self, *args: Any) -> None:
        super().__init__(*args)
        self.saves = 0
        self.booked: list[str] = []

    @classmethod
    def rebuild(cls, cfg: Any, state: Any, model: Any, args: tuple, kwargs: dict, checkpoint: str) -> Walk:
        return cls(Potential(model, args, kwargs, cfg.dtype, cfg.device), cfg, state, model, args, kwargs,
                   checkpoint)

    def phases(self) -> list[Phase]:
        end = self.cfg.num_burnin + self.cfg.num_samples
        return [Phase("burn-in", 0, self.cfg.num_burnin), Phase("sampling", self.cfg.num_burnin, end)]

    def advance(self, phase: Phase, bar: Any) -> bool:
        st = self.state
        if st.iteration == self.stop_at:
            return False
        z = st.z + torch.randn(st.z.shape, generator=self.generator, dtype=DT)
        if st.iteration == self.raise_at:
            raise KeyboardInterrupt
        if phase.name == "sampling":
            st.draws[:, st.iteration - self.cfg.num_burnin] = z
            st.stats["lp"][:, st.iteration - self.cfg.num_burnin] = -0.5 * (z * z).sum(-1)
        st.z, st.iteration = z, st.iteration + 1
        return True

    def phase_done(self, phase: Phase, seconds: float) -> None:
        self.booked.append(phase.name)

    def interrupt_message(self) -> str:
        return f"walk interrupted at {self.state.iteration}"

    def save(self) -> None:
        self.saves += 1
        super().save()

    def posterior(self, interrupted: bool) -> Posterior:
        done = max(0, self.state.iteration - self.cfg.num_burnin)
        samples, stats = self.kept(slice(0, done))
        return self.assemble(samples, stats, {"method": "walk", "interrupted": interrupted})


def start(checkpoint: str | None = None, **kw: Any) -> Walk:
    cfg = WalkConfig(num_chains=3, num_samples=12, seed=5, dtype=DT, device=torch.device("cpu"),
                     checkpoint_every=4, num_burnin=6)
    pot = Potential(walk_model, (), {}, DT, cfg.device)
    gen = torch.Generator().manual_seed(cfg.seed)
    state = RunState(iteration=0, z=torch.zeros(3, 2, dtype=DT), generator_state=gen.get_state(),
                      draws=cfg.empty_draws(pot.dim), stats=cfg.empty_stats(("lp",)))
    run = Walk(pot, cfg, state, walk_model, (), {}, checkpoint)
    for key, value in kw.items():
        setattr(run, key, value)
    return run


def test_a_run_interrupted_inside_an_iteration_resumes_to_the_uninterrupted_draws(tmp_path):
    full = start().run(progress=False)
    assert full.samples["x"].shape == (3, 12, 2) and full.info["engine"] == "bayesact"
    path = str(tmp_path / "walk.ckpt")
    interrupted = start(path, raise_at=9)
    with pytest.warns(UserWarning, match=r"walk interrupted at 9 \(checkpoint saved to"):
        part = interrupted.run(progress=False)
    assert interrupted.booked == ["burn-in", "sampling"]
    assert part.info["interrupted"] and part.num_draws == 3
    torch.testing.assert_close(part.samples["x"], full.samples["x"][:, :3], rtol=0, atol=0)
    payload = load_checkpoint(path, FORMAT)
    assert payload["state"]["iteration"] == 9
    resumed = resume_run(Walk, payload, path, walk_model, (), {}, False)
    assert not resumed.info["interrupted"] and resumed.info["checkpoint"] == path
    # the interrupted iteration's random numbers were put back: the same draws, bit for bit
    torch.testing.assert_close(resumed.samples["x"], full.samples["x"], rtol=0, atol=0)
    torch.testing.assert_close(resumed.sample_stats["lp"], full.sample_stats["lp"], rtol=0, atol=0)


def test_checkpoints_every_k_iterations_and_at_the_end(tmp_path):
    run = start(str(tmp_path / "walk.ckpt"))
    run.run(progress=False)
    assert run.saves == 18 // 4 + 1  # iterations 4, 8, 12, 16 and the end
    assert load_checkpoint(str(tmp_path / "walk.ckpt"), FORMAT)["state"]["iteration"] == 18


def test_a_stopped_run_writes_no_final_checkpoint_and_keeps_its_draws(tmp_path):
    run = start(str(tmp_path / "walk.ckpt"), stop_at=11)
    post = run.run(progress=False)
    assert run.booked == ["burn-in", "sampling"]  # the stopped phase's time is booked too
    assert run.saves == 2  # iterations 4 and 8 only
    assert post.num_draws == 5 and not post.info["interrupted"]
    assert load_checkpoint(str(tmp_path / "walk.ckpt"), FORMAT)["state"]["iteration"] == 8
