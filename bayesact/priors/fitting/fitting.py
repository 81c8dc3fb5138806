"""Functional-prior fitting: tune a BNN's weight prior so that its functions look like a target's.

"All You Need is a Good Functional Prior for Bayesian Deep Learning" (Tran, Rossi, Milios,
Filippone, JMLR 2022): minimise over the prior's hyperparameters ψ the Wasserstein-1 distance
between the BNN's function-space prior and a target (e.g. a GP) at random measurement points,
estimated by a Lipschitz critic re-trained at every outer step (Adagrad inner loop, RMSprop outer
loop). ``method="nngp"`` instead matches the BNN's own infinite-width (NNGP) kernel to the target's
covariance at the measurement points, which needs no critic.
"""

from __future__ import annotations

import copy
import os
import pickle
from collections.abc import Callable
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import torch
from torch import Tensor
from tqdm.auto import tqdm

from bayesact.infer.checkpoint import is_safe_file, load_checkpoint, save_checkpoint
from bayesact.infer.phases import Phase, run_phases, warn_user

from .._checks import check_int, check_protocol, check_real
from ..function.protocol import FunctionPrior, FunctionPriorWithCovariance
from ..weight.base import WeightPrior
from ..weight.gaussian import GaussianPrior
from ..weight.hierarchical import HierarchicalPrior
from .nngp_matching import (
    NonFiniteTargetError,
    bnn_nngp,
    relative_frobenius,
    target_covariance,
    target_samples,
)
from .protocol import HasActivation, HasWeightPrior, WeightSpacePrior
from .wasserstein import critic_gap, slope_estimate, train_critic

METHODS = ("wasserstein", "nngp")
CHECKPOINT_FORMAT = "bayesact.priors.fit-checkpoint/1"
FITTED_FORMAT = "bayesact.priors.fitted-prior/1"
#: a positive hyperparameter (std, shape, rate) below this has collapsed: the fit cannot recover it
COLLAPSE_THRESHOLD = 1e-6
_PRIOR_CLASSES: dict[str, Callable[[int], WeightPrior]] = {  # a class, called with num_layers
    "GaussianPrior": GaussianPrior,
    "HierarchicalPrior": HierarchicalPrior,
}


def atomic_save(payload: dict[str, Any], path: Path) -> None:
    """Write ``payload`` as a bayesact safe file (:func:`bayesact.infer.checkpoint.save_checkpoint`:
    checksummed, plain data only, written to a temporary file and renamed over ``path``): a failed
    write (disk full, interruption) leaves any previous file at ``path`` intact."""
    save_checkpoint(path, payload)


def safe_load(path: Path, fmt: str, keys: tuple[str, ...], what: str) -> dict[str, Any]:
    """A file written by :func:`atomic_save` (its checksum verified, read with
    ``torch.load(weights_only=True)``: no code runs from it), or a plain ``torch.save`` file of
    an earlier version read the same way; checked to be a dict of format ``fmt`` holding
    ``keys``; else a ValueError naming the file."""
    if path.is_file() and is_safe_file(path):
        payload = load_checkpoint(path, fmt)
    else:
        try:
            payload = torch.load(path, weights_only=True)
        except (pickle.UnpicklingError, RuntimeError, EOFError, OSError) as exc:
            reason = f"{type(exc).__name__}: {exc}"
            raise ValueError(f"{str(path)!r} is not a readable {what} ({reason})") from None
    if not isinstance(payload, dict) or payload.get("format", fmt) != fmt or not set(keys) <= set(payload):
        raise ValueError(f"{str(path)!r} is not a {what} (expected format {fmt!r})")
    return payload


def _summary(values: Tensor) -> str:
    """A short summary of per-layer values: all of them up to 4 layers, else their range."""
    items = values.detach().tolist()
    if len(items) <= 4:
        return "[" + ", ".join(f"{v:.3g}" for v in items) + "]"
    return f"{min(items):.3g}..{max(items):.3g}"


@dataclass(repr=False)
class FittedPrior:
    """The outcome of :func:`fit_functional_prior`: the tuned prior and its distance history.

    Pass it to ``BNN(prior=fitted)``. ``history`` holds the distance estimate of every outer
    iteration (W1 for "wasserstein", relative Frobenius kernel error for "nngp").
    """

    prior: WeightPrior
    history: list[float] = field(default_factory=list)
    method: str = "wasserstein"
    settings: dict[str, Any] = field(default_factory=dict)

    @property
    def num_iters(self) -> int:
        """Completed outer iterations."""
        return len(self.history)

    def __repr__(self) -> str:
        layers = self.prior.num_layers
        parts = [type(self.prior).__name__, f"{layers} layers", self.method, f"{self.num_iters} iterations"]
        if self.history:
            parts.append(f"distance {self.history[-1]:.4g}")
        if layers is not None:
            parts += [f"{k} {_summary(v)}" for k, v in self.prior.positive_hyperparameters().items()]
        return f"FittedPrior({', '.join(parts)})"

    def save(self, path: str | Path) -> None:
        """Save the prior's hyperparameters, the history and the settings (a torch file of plain
        tensors, numbers and strings, written atomically)."""
        atomic_save({"format": FITTED_FORMAT, **self._state()}, Path(path))

    def _state(self) -> dict[str, Any]:
        return {
            "prior_class": type(self.prior).__name__,
            "num_layers": self.prior.num_layers,
            "prior_state": {k: v.detach().cpu() for k, v in self.prior.state_dict().items()},
            "history": list(self.history),
            "method": self.method,
            "settings": dict(self.settings),
        }

    @classmethod
    def load(cls, path: str | Path) -> FittedPrior:
        """A :class:`FittedPrior` saved by :meth:`save`."""
        state = safe_load(Path(path), FITTED_FORMAT, _STATE_KEYS, "saved FittedPrior")
        return cls._from_state(state)

    @classmethod
    def _from_state(cls, state: dict[str, Any]) -> FittedPrior:
        prior_class = _PRIOR_CLASSES.get(state["prior_class"])
        if prior_class is None:
            raise ValueError(f"unknown prior class {state['prior_class']!r} in the saved file")
        prior = prior_class(state["num_layers"])
        prior.load_state_dict(state["prior_state"])
        return cls(prior, list(state["history"]), state["method"], dict(state["settings"]))


_STATE_KEYS = ("prior_class", "num_layers", "prior_state", "history", "method", "settings")


def _check_arguments(bnn: Any, target: Any, x_measure: Any, method: str, optimizer: str) -> None:
    """Errors naming the argument: ArgumentTypeError (a TypeError, also a ValueError) for an object
    that does not satisfy its protocol, ValueError for a bad value."""
    check_protocol(bnn, FunctionPrior, "bnn", "be a FunctionPrior (a sample_functions(x, n) method)")
    check_protocol(bnn, HasWeightPrior, "bnn", "satisfy HasWeightPrior (a .prior and an .in_dim)")
    check_protocol(bnn.prior, WeightPrior, "bnn.prior", "be a WeightPrior")
    check_protocol(
        target, FunctionPrior, "target",
        "have a sample_functions(x, n) method (a FunctionPrior, e.g. bayesact.priors.GPPrior(kernel))",
    )  # fmt: skip
    if not (isinstance(x_measure, Tensor) or callable(x_measure)):
        raise ValueError("'x_measure' must be a tensor (M, in_dim) or a callable returning one")
    if method not in METHODS:
        raise ValueError(f"'method' must be one of {METHODS}, got {method!r}")
    if optimizer not in _OPTIMIZERS:
        raise ValueError(f"'optimizer' must be one of {tuple(_OPTIMIZERS)}, got {optimizer!r}")
    if method == "nngp":
        check_protocol(bnn, HasActivation, "bnn", "have an .activation for method='nngp'")
    if method == "nngp" and not isinstance(bnn.prior, GaussianPrior):
        raise ValueError(
            "method='nngp' needs a GaussianPrior (a hierarchical prior's functions are not a GP)"
        )


def _check_settings(
    settings: dict[str, Any], checkpoint: Any, checkpoint_every: Any, flags: dict[str, Any]
) -> None:
    check_int(settings["num_functions"], "num_functions", 2)
    check_int(settings["num_iters"], "num_iters")
    check_int(settings["critic_steps"], "critic_steps")
    check_int(checkpoint_every, "checkpoint_every")
    check_real(settings["lr"], "lr")
    check_real(settings["critic_lr"], "critic_lr")
    check_real(settings["penalty"], "penalty", allow_zero=True)
    if settings["critic_grad_tol"] is not None:
        check_real(settings["critic_grad_tol"], "critic_grad_tol", allow_zero=True)
    seed = settings["seed"]
    if seed is not None and (isinstance(seed, bool) or not isinstance(seed, int)):
        raise ValueError(f"'seed' must be an int or None, got {seed!r}")
    if checkpoint is not None and not isinstance(checkpoint, str | os.PathLike):
        raise ValueError(f"'checkpoint' must be a path or None, got {type(checkpoint).__name__}")
    for name, flag in flags.items():
        if not isinstance(flag, bool):
            raise ValueError(f"'{name}' must be True or False, got {flag!r}")


def _measurement_points(x_measure: Tensor | Callable[[], Tensor], in_dim: int) -> Tensor:
    points = x_measure() if callable(x_measure) and not isinstance(x_measure, Tensor) else x_measure
    if not isinstance(points, Tensor) or points.dim() != 2 or points.shape[1] != in_dim:
        shape = tuple(points.shape) if isinstance(points, Tensor) else type(points).__name__
        raise ValueError(f"'x_measure' must give points of shape (M, {in_dim}), got {shape}")
    if points.shape[0] < 2:
        raise ValueError("'x_measure' must give at least 2 points")
    if not bool(torch.isfinite(points).all()):
        raise ValueError("'x_measure' gave points with NaN or inf")
    return points


def _wasserstein_loss(
    bnn: WeightSpacePrior,
    target: FunctionPrior,
    points: Tensor,
    n: int,
    settings: dict[str, Any],
    cache: dict[str, Any],
) -> Tensor:
    """W1 estimate: a critic trained on one bag of functions, evaluated on a fresh bag."""
    with torch.no_grad():
        train_bnn = bnn.sample_functions(points, n)
    train_target = target_samples(target, points, n)
    critic = train_critic(
        train_bnn,
        train_target,
        steps=settings["critic_steps"],
        lr=settings["critic_lr"],
        penalty=settings["penalty"],
        grad_tol=settings["critic_grad_tol"],
    )
    f_target = target_samples(target, points, n)
    f_bnn = bnn.sample_functions(points, n)
    return critic_gap(critic, f_bnn, f_target) / slope_estimate(critic, f_bnn, f_target)


def _nngp_loss(
    bnn: WeightSpacePrior,
    target: FunctionPrior,
    points: Tensor,
    n: int,
    settings: dict[str, Any],
    cache: dict[str, Any],
) -> Tensor:
    """Relative Frobenius error of the BNN's NNGP kernel against the target covariance.

    A target known only through samples at fixed measurement points gets as covariance the
    running mean of the estimates of all iterations so far, so its error keeps shrinking instead
    of staying at the level of one bag of n functions.
    """
    covariance = target_covariance(target, points, n)
    if not isinstance(target, FunctionPriorWithCovariance):
        if cache.get("points") is not points:
            cache.update(points=points, count=0, covariance=None)
        count, previous = cache["count"], cache["covariance"]
        if previous is not None:
            covariance = (previous * count + covariance) / (count + 1)
        cache.update(count=count + 1, covariance=covariance)
    return relative_frobenius(bnn_nngp(bnn, points), covariance)


_LOSSES = {"wasserstein": _wasserstein_loss, "nngp": _nngp_loss}
_OPTIMIZERS = {"rmsprop": torch.optim.RMSprop, "adam": torch.optim.Adam}


def fit_functional_prior(
    bnn: WeightSpacePrior,
    target: FunctionPrior,
    x_measure: Tensor | Callable[[], Tensor],
    *,
    num_functions: int = 128,
    num_iters: int = 200,
    method: str = "wasserstein",
    lr: float = 0.05,
    critic_steps: int = 200,
    critic_lr: float = 0.02,
    penalty: float = 10.0,
    critic_grad_tol: float | None = None,
    progress: bool = True,
    seed: int | None = None,
    checkpoint: str | Path | None = None,
    checkpoint_every: int = 10,
    resume: bool = False,
    optimizer: str = "rmsprop",
) -> FittedPrior:
    """Tune ``bnn.prior`` so that the BNN's prior functions match ``target``'s (Tran et al., 2022).

    ``bnn`` is a :class:`~bayesact.priors.FunctionPrior` drawing its functions through a weight prior
    (:class:`~bayesact.priors.HasWeightPrior`: ``.prior`` and ``.in_dim``), such as a
    :class:`~bayesact.models.BNN`; ``target`` is any :class:`~bayesact.priors.FunctionPrior` (its
    ``covariance(x)`` is used by ``method="nngp"`` when it is a
    :class:`~bayesact.priors.FunctionPriorWithCovariance`).

    Each outer iteration draws measurement points (``x_measure`` itself, or a fresh set from the
    callable), ``num_functions`` target functions and ``num_functions`` BNN functions (one weight draw
    each, reparameterised), then:

    - ``method="wasserstein"``: trains a fresh Lipschitz critic (``critic_steps`` Adagrad steps at
      ``critic_lr``, one-sided gradient penalty ``penalty``) on one bag of functions, evaluates its
      W1 estimate E_bnn[φ] - E_target[φ] on a fresh bag, and takes one RMSprop step (``lr``) on the
      prior's hyperparameters against it;
    - ``method="nngp"``: takes one RMSprop step on the squared relative Frobenius error between the
      BNN's NNGP kernel (exact, from :mod:`bayesact.kernels`) and the target's covariance at the
      points (exact when the target has ``covariance(x)``, else estimated from its samples).

    ``optimizer="rmsprop"`` (the paper's) or ``"adam"`` for the outer step. PyTorch's RMSprop has no
    bias correction: its first steps are about 10x ``lr``, so most of the descent happens in the
    first few iterations; Adam's steps stay near ``lr`` from the start.

    Runs through :func:`bayesact.infer.phases.run_phases`: a progress bar on a terminal or in a
    notebook only; Ctrl-C returns the prior fitted over the iterations completed so far (with a
    RuntimeWarning), the unfinished one dropped. With
    ``checkpoint``, the state is saved every ``checkpoint_every`` iterations and on interruption
    (with the random state from the start of the unfinished iteration, so that a resumed fit
    repeats an uninterrupted one),
    atomically (a temporary file renamed over the old one, so a failed write keeps the previous
    checkpoint); ``resume=True`` continues from that file (read with ``weights_only=True``) up to
    ``num_iters`` iterations in total, with the ``lr`` passed now.

    Returns:
        A :class:`FittedPrior` (the same prior object as ``bnn.prior``, now tuned).

    Raises:
        TypeError: ``bnn`` or ``target`` not satisfying its protocol, or ``bnn.prior`` not a
            ``WeightPrior`` (the error is also a ValueError, as these checks raised before).
        ValueError: bad arguments ( measurement points of the
            wrong shape or not finite, ``num_functions < 2``, a non-positive ``num_iters``,
            ``critic_steps``, ``checkpoint_every``, ``lr`` or ``critic_lr``, a negative ``penalty``,
            an unknown method or optimizer, ``method="nngp"`` with a non-Gaussian prior, a
            checkpoint that is not one); a target giving NaN or inf (naming the iteration); a NaN
            distance estimate; or an outer step that sends a std (shape, rate) below 1e-6 or to a
            non-finite value, which names ``lr`` and restores the prior to its values before the step.
    """
    _check_arguments(bnn, target, x_measure, method, optimizer)
    settings = {
        "num_functions": num_functions, "num_iters": num_iters, "lr": lr, "critic_steps": critic_steps,
        "critic_lr": critic_lr, "penalty": penalty, "critic_grad_tol": critic_grad_tol, "seed": seed,
        "optimizer": optimizer,
    }  # fmt: skip
    _check_settings(settings, checkpoint, checkpoint_every, {"progress": progress, "resume": resume})
    del settings["num_iters"]  # not a setting of the fit: a resumed run may extend it
    prior: WeightPrior = bnn.prior
    outer = _OPTIMIZERS[optimizer](prior.parameters(), lr=lr)
    fitted = FittedPrior(prior, [], method, settings)
    path = Path(checkpoint) if checkpoint is not None else None
    rng_state = None
    if resume:
        if path is None or not path.exists():
            raise ValueError("'resume=True' needs an existing 'checkpoint' file")
        keys = ("fitted", "optimizer", "rng_state")
        saved = safe_load(path, CHECKPOINT_FORMAT, keys, "prior-fit checkpoint")
        written_with = saved["fitted"]["settings"].get("optimizer", "rmsprop")
        if written_with != optimizer:
            raise ValueError(
                f"'optimizer' is {optimizer!r} but the checkpoint was written with {written_with!r}"
            )
        prior.load_state_dict(saved["fitted"]["prior_state"])
        fitted.history = list(saved["fitted"]["history"])
        outer.load_state_dict(saved["optimizer"])
        for group in outer.param_groups:  # the step size asked for now, not the saved one
            group["lr"] = lr
        rng_state = saved["rng_state"]

    loss_fn = _LOSSES[method]
    cache: dict[str, Any] = {}
    stream: Tensor | None = None  # the random state at the start of the current iteration

    def save() -> None:
        if path is not None:
            rng = stream if stream is not None else torch.get_rng_state()
            state = {"format": CHECKPOINT_FORMAT, "fitted": fitted._state(), "optimizer": outer.state_dict(),
                     "rng_state": rng}  # fmt: skip
            atomic_save(state, path)

    def advance(phase: Phase, bar: tqdm) -> bool:
        nonlocal stream
        iteration = fitted.num_iters
        stream = torch.get_rng_state()
        points = _measurement_points(x_measure, bnn.in_dim)
        try:
            loss = loss_fn(bnn, target, points, num_functions, settings, cache)
        except NonFiniteTargetError as exc:
            raise ValueError(f"{exc} at iteration {iteration}") from None
        if not bool(torch.isfinite(loss)):
            raise ValueError(
                f"the distance estimate is {float(loss)} at iteration {iteration} (finite target "
                f"samples): lower 'lr' (got {lr}) or 'critic_lr' (got {critic_lr})"
            )
        before = [p.detach().clone() for p in prior.parameters()]
        outer_before = copy.deepcopy(outer.state_dict())  # a few tensors of the prior's size
        outer.zero_grad()
        loss.backward()
        try:
            outer.step()
            _check_collapse(prior, before, iteration, lr)
            fitted.history.append(float(loss.detach()))
        except KeyboardInterrupt:  # mid-step: undo it, so the state is that of the completed iterations
            with torch.no_grad():
                for parameter, old in zip(prior.parameters(), before, strict=True):
                    parameter.copy_(old)
            outer.load_state_dict(outer_before)
            del fitted.history[iteration:]
            raise
        stream = None  # the iteration is complete: a save now records the state after it
        bar.update(1)
        bar.set_postfix(distance=f"{fitted.history[-1]:.4g}")
        if fitted.num_iters % checkpoint_every == 0:
            save()
        return True

    phases = [Phase("fit", 0, num_iters, f"prior fit ({method})")]
    with torch.random.fork_rng(devices=[]):
        if rng_state is not None:
            torch.set_rng_state(rng_state)
        elif seed is not None:
            torch.manual_seed(seed)
        try:
            run_phases(phases, lambda: fitted.num_iters, advance, lambda phase, seconds: None, progress)
        except KeyboardInterrupt:
            save()  # the unfinished iteration is redone on resume, from the same random state
            warn_user(
                f"prior fitting interrupted after {fitted.num_iters} iterations; returning the prior "
                "fitted so far" + (f" (checkpoint: {path})" if path else ""),
                RuntimeWarning,
            )
        else:
            save()
    return fitted


def _check_collapse(prior: WeightPrior, before: list[Tensor], iteration: int, lr: float) -> None:
    """A ValueError naming ``lr`` when the outer step drove a positive hyperparameter to (nearly) 0 or
    to a non-finite value; the prior's parameters are first restored to their values before the step."""
    with torch.no_grad():
        values = prior.positive_hyperparameters()
        bad = {
            name: value for name, value in values.items()
            if not bool(torch.isfinite(value).all()) or bool((value < COLLAPSE_THRESHOLD).any())
        }  # fmt: skip
        if not bad:
            return
        for parameter, old in zip(prior.parameters(), before, strict=True):
            parameter.copy_(old)
    detail = ", ".join(f"{name} = {_summary(value)}" for name, value in bad.items())
    raise ValueError(
        f"prior fitting diverged at iteration {iteration}: the outer step sent {detail} (below "
        f"{COLLAPSE_THRESHOLD:g} or not finite); lower 'lr' (got {lr}). The prior keeps its values from "
        "before that step"
    )
