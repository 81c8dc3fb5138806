"""fit_functional_prior on bad input and failures: argument checks, a NaN target, a collapsing outer
step, atomic checkpoints that survive a failed write, and loads that refuse pickled code."""

from __future__ import annotations

import errno
import io
from pathlib import Path

import gpytorch
import pytest
import torch

from bayesact.infer.checkpoint import load_checkpoint
from bayesact.models import BNN
from bayesact.priors import FittedPrior, GaussianPrior, GPPrior, fit_functional_prior

X = torch.linspace(-2, 2, 10).unsqueeze(-1)
FAST = {"num_functions": 8, "critic_steps": 2, "progress": False, "seed": 0}


def _rbf_target() -> GPPrior:
    return GPPrior(gpytorch.kernels.ScaleKernel(gpytorch.kernels.RBFKernel()))


@pytest.mark.parametrize(
    ("kwargs", "message"),
    [
        ({"checkpoint_every": 0}, "'checkpoint_every' must be a positive int, got 0"),
        ({"checkpoint_every": 2.5}, "'checkpoint_every' must be a positive int"),
        ({"penalty": -1.0}, "'penalty' must be a finite number >= 0, got -1.0"),
        ({"penalty": float("nan")}, "'penalty' must be a finite number >= 0"),
        ({"lr": 0.0}, "'lr' must be a finite number > 0, got 0.0"),
        ({"lr": float("inf")}, "'lr' must be a finite number > 0"),
        ({"lr": "0.1"}, "'lr' must be a finite number > 0"),
        ({"critic_lr": -0.02}, "'critic_lr' must be a finite number > 0"),
        ({"critic_grad_tol": -1.0}, "'critic_grad_tol' must be a finite number >= 0"),
        ({"num_iters": 0}, "'num_iters' must be a positive int, got 0"),
        ({"num_iters": 3.0}, "'num_iters' must be a positive int"),
        ({"critic_steps": 0}, "'critic_steps' must be a positive int"),
        ({"num_functions": True}, "'num_functions' must be an int >= 2"),
        ({"seed": 1.5}, "'seed' must be an int or None"),
        ({"progress": "no"}, "'progress' must be True or False"),
        ({"checkpoint": 3}, "'checkpoint' must be a path or None"),
        ({"x_measure": torch.full((5, 1), float("nan"))}, "'x_measure' gave points with NaN or inf"),
    ],
)
def test_bad_numeric_arguments(kwargs: dict, message: str) -> None:
    """Every numeric argument is checked before any work (checkpoint_every=0 was a
    ZeroDivisionError, a negative penalty was accepted)."""
    arguments = {"num_iters": 2, **FAST, **kwargs}
    x = arguments.pop("x_measure", X)
    with pytest.raises(ValueError, match=message):
        fit_functional_prior(BNN(1, hidden=(4,)), _rbf_target(), x, **arguments)


class _NaNTarget:
    """A GP target whose sample_functions returns NaN from its ``bad_from``-th call on."""

    def __init__(self, bad_from: int):
        self.target, self.calls, self.bad_from = _rbf_target(), 0, bad_from

    def sample_functions(self, x: torch.Tensor, n: int) -> torch.Tensor:
        self.calls += 1
        f = self.target.sample_functions(x, n)
        return torch.full_like(f, float("nan")) if self.calls >= self.bad_from else f


@pytest.mark.parametrize(("method", "bad_from", "iteration"), [("wasserstein", 3, 1), ("nngp", 2, 1)])
def test_nan_target_stops_naming_the_target_and_iteration(method: str, bad_from: int, iteration: int) -> None:
    """Wasserstein draws target functions twice per iteration, nngp once: NaN from the 3rd (2nd) call
    is the second iteration (before the fix: NaN history and NaN stds, no error). The prior stays finite."""
    bnn = BNN(1, hidden=(8,))
    message = f"'target' \\(_NaNTarget\\) returned .*NaN.* at iteration {iteration}"
    with pytest.raises(ValueError, match=message):
        fit_functional_prior(bnn, _NaNTarget(bad_from), X, method=method, num_iters=5, **FAST)
    stds = torch.cat(list(bnn.prior.positive_hyperparameters().values()))
    assert bool(torch.isfinite(stds).all())


@pytest.mark.parametrize("optimizer", ["rmsprop", "adam"])
def test_collapsing_stds_raise_naming_lr(optimizer: str) -> None:
    """lr=50: the first outer step sends the raw output-layer weight std to about -500 (RMSprop) or
    -50 (Adam), i.e. a std of 0 (or 1e-22), from which the fit never recovers (measured before the fix:
    weight_std [500.5, 0], bias_std [0, 0], no error). Now: a ValueError naming lr at iteration 0,
    and the prior back at its starting values."""
    torch.manual_seed(0)
    bnn = BNN(1, hidden=(8,))
    with pytest.raises(ValueError, match="diverged at iteration 0.*lower 'lr' \\(got 50"):
        fit_functional_prior(bnn, _rbf_target(), X, num_iters=3, lr=50.0, optimizer=optimizer, **FAST)
    torch.testing.assert_close(bnn.prior.weight_std.detach(), torch.ones(2))
    torch.testing.assert_close(bnn.prior.bias_std.detach(), torch.ones(2))


def test_moderate_lr_is_not_flagged() -> None:
    bnn = BNN(1, hidden=(8,))
    fitted = fit_functional_prior(bnn, _rbf_target(), X, method="nngp", num_iters=20, lr=0.05, **FAST)
    assert fitted.num_iters == 20 and min(fitted.history) < fitted.history[0]


def _fit(path: Path, num_iters: int, resume: bool = False) -> FittedPrior:
    return fit_functional_prior(BNN(1, hidden=(8,)), _rbf_target(), X, num_iters=num_iters,
                                checkpoint=path, checkpoint_every=1, resume=resume, **FAST)  # fmt: skip


def test_failed_checkpoint_write_keeps_the_previous_checkpoint(tmp_path: Path, monkeypatch) -> None:
    """A write that fails half-way (disk full) must not touch the saved checkpoint: before the fix the
    file was truncated in place and the 3 saved iterations were lost."""
    path = tmp_path / "fit.pt"
    _fit(path, 3)
    saved = path.read_bytes()
    real_save = torch.save

    def failing_save(obj, f, *args, **kwargs):  # writes half a checkpoint, then the disk is full
        buffer = io.BytesIO()
        real_save(obj, buffer)
        data = buffer.getvalue()
        if isinstance(f, str | Path):
            with open(f, "wb") as handle:
                handle.write(data[: len(data) // 2])
        else:
            f.write(data[: len(data) // 2])
        raise OSError(errno.ENOSPC, "No space left on device")

    monkeypatch.setattr(torch, "save", failing_save)
    with pytest.raises(OSError, match="No space left"):
        _fit(path, 6, resume=True)
    monkeypatch.undo()
    assert path.read_bytes() == saved
    assert [p.name for p in tmp_path.iterdir()] == ["fit.pt"]  # no temporary file left behind
    assert _fit(path, 4, resume=True).num_iters == 4  # the surviving checkpoint resumes


CALLED: list[str] = []


def _side_effect(message: str) -> str:
    CALLED.append(message)
    return message


class _Exploit:
    """Unpickling this calls _side_effect: a stand-in for arbitrary code in a crafted file."""

    def __reduce__(self):
        return (_side_effect, ("code ran",))


def test_crafted_pickles_are_refused(tmp_path: Path) -> None:
    CALLED.clear()
    path = tmp_path / "evil.pt"
    torch.save({"format": "bayesact.priors.fit-checkpoint/1", "fitted": _Exploit(), "optimizer": {},
                "rng_state": torch.zeros(1)}, path)  # fmt: skip
    with pytest.raises(ValueError, match="is not a readable prior-fit checkpoint"):
        _fit(path, 2, resume=True)
    with pytest.raises(ValueError, match="is not a readable saved FittedPrior"):
        FittedPrior.load(path)
    assert CALLED == []


def test_load_checks_the_format(tmp_path: Path) -> None:
    path = tmp_path / "other.pt"
    torch.save({"weights": torch.ones(3)}, path)
    with pytest.raises(ValueError, match="is not a prior-fit checkpoint"):
        _fit(path, 2, resume=True)
    with pytest.raises(ValueError, match="is not a saved FittedPrior"):
        FittedPrior.load(path)
    path.write_bytes(b"not a torch file")
    with pytest.raises(ValueError, match="is not a readable saved FittedPrior"):
        FittedPrior.load(path)


def test_saved_prior_is_plain_data(tmp_path: Path) -> None:
    """FittedPrior.save writes a checksummed safe file of plain tensors, numbers and strings (read with
    torch.load(weights_only=True) after the checksum) and the copy equals the original."""
    fitted = fit_functional_prior(BNN(1, hidden=(8,), prior=GaussianPrior(weight_std=1.5)), _rbf_target(), X,
                                  method="nngp", num_iters=2, **FAST)  # fmt: skip
    fitted.save(tmp_path / "prior.pt")
    raw = load_checkpoint(tmp_path / "prior.pt", "bayesact.priors.fitted-prior/1")
    assert raw["format"] == "bayesact.priors.fitted-prior/1" and raw["history"] == fitted.history
    loaded = FittedPrior.load(tmp_path / "prior.pt")
    torch.testing.assert_close(loaded.prior.weight_std, fitted.prior.weight_std)


def test_corrupted_or_truncated_checkpoint_is_refused_naming_the_file(tmp_path: Path) -> None:
    path = tmp_path / "fit.pt"
    _fit(path, 2)
    data = bytearray(path.read_bytes())
    data[-40:-24] = bytes(b ^ 0xFF for b in data[-40:-24])  # 16 flipped bytes in the payload
    path.write_bytes(bytes(data))
    with pytest.raises(ValueError, match="fit.pt.*corrupted"):
        _fit(path, 3, resume=True)
    path.write_bytes(bytes(data[: len(data) // 2]))
    with pytest.raises(ValueError, match="fit.pt.*truncated"):
        _fit(path, 3, resume=True)


def test_resume_uses_the_lr_passed_now(tmp_path: Path) -> None:
    path = tmp_path / "fit.pt"
    _fit(path, 2)
    fitted = fit_functional_prior(BNN(1, hidden=(8,)), _rbf_target(), X, num_iters=3, lr=0.001,
                                  checkpoint=path, resume=True, **FAST)  # fmt: skip
    assert fitted.num_iters == 3
    state = load_checkpoint(path, "bayesact.priors.fit-checkpoint/1")
    assert state["optimizer"]["param_groups"][0]["lr"] == 0.001


def test_fitted_prior_repr_is_one_short_line() -> None:
    fitted = fit_functional_prior(BNN(1, hidden=(8,)), _rbf_target(), X, method="nngp", num_iters=2, **FAST)
    text = repr(fitted)
    assert "\n" not in text and "tensor(" not in text and len(text) < 200
    assert text.startswith("FittedPrior(GaussianPrior, 2 layers, nngp, 2 iterations, distance ")
    assert "weight_std [" in text and "bias_std [" in text
    deep = FittedPrior(GaussianPrior(6, weight_std=torch.linspace(0.5, 3.0, 6)))
    assert "weight_std 0.5..3" in repr(deep) and len(repr(deep)) < 200
