"""The prior fit's loop (bayesact.infer.phases.run_phases): its numbers, Ctrl-C, periodic checkpoints."""

from __future__ import annotations

from pathlib import Path
from typing import Any

import gpytorch
import pytest
import torch

from bayesact.infer.checkpoint import load_checkpoint
from bayesact.models import BNN
from bayesact.priors import FittedPrior, GPPrior, fit_functional_prior
from bayesact.priors.fitting.fitting import CHECKPOINT_FORMAT

X = torch.linspace(-2, 2, 10).unsqueeze(-1)
FAST = {"num_functions": 8, "critic_steps": 3, "progress": False, "seed": 0}

# Recorded with the fit's own loop before it ran through run_phases (commit dc91539): seed 0, BNN(1, (8,))
# built after torch.manual_seed(123), 4 iterations. A loop that drew random numbers in another order or
# stepped differently changes these at the 1e-2 level; the tolerance only absorbs float32 rounding
# across torch builds.
RECORDED = {
    "wasserstein": (
        [0.023899078369140625, 0.023628056049346924, -0.02739548683166504, -0.014171838760375977],
        {"weight_std": [1.0027471780776978, 0.8742161989212036],
         "bias_std": [0.9582985639572144, 0.5437753200531006]},
    ),
    "nngp": (
        [2.9105327129364014, 1.06410813331604, 0.6621660590171814, 0.5330668687820435],
        {"weight_std": [1.5981247425079346, 0.6342795491218567],
         "bias_std": [0.5795109272003174, 0.5113968849182129]},
    ),
}


def _target() -> GPPrior:
    return GPPrior(gpytorch.kernels.ScaleKernel(gpytorch.kernels.RBFKernel()))


def _bnn() -> BNN:
    torch.manual_seed(123)
    return BNN(1, hidden=(8,))


def _stds(fitted: FittedPrior) -> dict[str, list[float]]:
    return {k: v.detach().tolist() for k, v in fitted.prior.positive_hyperparameters().items()}


@pytest.mark.parametrize("method", ["wasserstein", "nngp"])
def test_history_and_stds_are_the_recorded_ones(method: str) -> None:
    fitted = fit_functional_prior(_bnn(), _target(), X, method=method, num_iters=4, **FAST)
    history, stds = RECORDED[method]
    assert fitted.history == pytest.approx(history, rel=1e-5, abs=1e-6)
    for name, values in stds.items():
        assert _stds(fitted)[name] == pytest.approx(values, rel=1e-6)


class _Interrupting:
    """A target raising KeyboardInterrupt on the k-th call of sample_functions (two calls an iteration
    for "wasserstein"), after the BNN's draws of that iteration have used the random stream."""

    def __init__(self, interrupt_at: int):
        self.target, self.calls, self.interrupt_at = _target(), 0, interrupt_at

    def sample_functions(self, x: torch.Tensor, n: int) -> torch.Tensor:
        self.calls += 1
        if self.calls == self.interrupt_at:
            raise KeyboardInterrupt
        return self.target.sample_functions(x, n)


def test_interrupted_then_resumed_fit_equals_an_uninterrupted_one(tmp_path: Path) -> None:
    path = tmp_path / "fit.pt"
    whole = fit_functional_prior(_bnn(), _target(), X, num_iters=6, **FAST)
    with pytest.warns(RuntimeWarning, match="interrupted after 3 iterations.*checkpoint"):
        partial = fit_functional_prior(_bnn(), _Interrupting(7), X, num_iters=6, checkpoint=path,
                                       checkpoint_every=2, **FAST)  # fmt: skip
    assert partial.num_iters == 3 and partial.history == whole.history[:3]
    assert load_checkpoint(path, CHECKPOINT_FORMAT)["fitted"]["history"] == partial.history
    resumed = fit_functional_prior(_bnn(), _target(), X, num_iters=6, checkpoint=path, resume=True, **FAST)
    assert resumed.history == whole.history
    assert _stds(resumed) == _stds(whole)


def test_interrupt_without_a_checkpoint_returns_the_iterations_done() -> None:
    with pytest.warns(RuntimeWarning, match="after 2 iterations; returning the prior fitted so far$"):
        partial = fit_functional_prior(_bnn(), _Interrupting(6), X, num_iters=5, **FAST)
    assert partial.num_iters == 2


class _Spy:
    """A target that records, at each call, how many iterations the checkpoint file holds."""

    def __init__(self, path: Path):
        self.target, self.path, self.seen = _target(), path, []

    def sample_functions(self, x: torch.Tensor, n: int) -> torch.Tensor:
        saved = load_checkpoint(self.path, CHECKPOINT_FORMAT) if self.path.exists() else None
        self.seen.append(len(saved["fitted"]["history"]) if saved else 0)
        return self.target.sample_functions(x, n)


def test_checkpoint_every_k_iterations_and_at_the_end(tmp_path: Path) -> None:
    path = tmp_path / "fit.pt"
    spy = _Spy(path)
    fit_functional_prior(_bnn(), spy, X, num_iters=5, checkpoint=path, checkpoint_every=2, **FAST)
    assert spy.seen[::2] == [0, 0, 2, 2, 4]  # at the start of iterations 0..4
    assert len(load_checkpoint(path, CHECKPOINT_FORMAT)["fitted"]["history"]) == 5


def test_no_progress_bar_outside_a_terminal(capsys: pytest.CaptureFixture[str]) -> None:
    fit_functional_prior(_bnn(), _target(), X, num_iters=2, **{**FAST, "progress": True})
    assert capsys.readouterr().err == ""


def test_interrupt_during_the_outer_step_undoes_it(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    """Ctrl-C after the optimiser stepped but before the iteration was recorded: the prior, the
    optimiser state and the history are those of the completed iterations, and resuming repeats
    the uninterrupted fit."""
    path = tmp_path / "fit.pt"
    whole = fit_functional_prior(_bnn(), _target(), X, num_iters=4, **FAST)
    after_two = fit_functional_prior(_bnn(), _target(), X, num_iters=2, **FAST)
    bnn = _bnn()
    prior_type = type(bnn.prior)
    hyperparameters, calls = prior_type.positive_hyperparameters, []

    def interrupt_third(self: Any) -> dict[str, torch.Tensor]:
        # the loop reads the hyperparameters once per iteration, right after the optimiser's step
        # (its collapse check): the third read is mid-step of the third iteration
        calls.append(1)
        if len(calls) == 3:
            raise KeyboardInterrupt
        return hyperparameters(self)

    monkeypatch.setattr(prior_type, "positive_hyperparameters", interrupt_third)
    with pytest.warns(RuntimeWarning, match="interrupted after 2 iterations"):
        partial = fit_functional_prior(bnn, _target(), X, num_iters=4, checkpoint=path, **FAST)
    monkeypatch.undo()
    assert partial.history == whole.history[:2] and _stds(partial) == _stds(after_two)
    resumed = fit_functional_prior(_bnn(), _target(), X, num_iters=4, checkpoint=path, resume=True, **FAST)
    assert resumed.history == whole.history and _stds(resumed) == _stds(whole)
