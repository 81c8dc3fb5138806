"""Argument handling shared by the samplers (:func:`~bayesact.infer.mcmc`,
:func:`~bayesact.infer.sghmc`, :func:`~bayesact.infer.svi`), :func:`~bayesact.infer.predictive`
and :func:`~bayesact.infer.resume`: option checks, the run's device and dtype (and the context
that makes a whole run use them), the model's keyword arguments, data and ``init`` checks.
"""

from __future__ import annotations

import contextlib
import difflib
import inspect
import math
import operator
import os
from collections.abc import Callable, Iterator, Sequence
from typing import Any, NamedTuple

import torch
from torch import nn

from bayesact.infer.potential import Potential

__all__ = [
    "RunInputs",
    "check_checkpoint_path",
    "check_init",
    "check_int",
    "check_model",
    "check_observed",
    "check_positive",
    "check_seed",
    "draw_seed",
    "keyword_options",
    "model_modules",
    "move_arguments",
    "move_to",
    "nonfinite_arguments",
    "place_arguments",
    "prepare_run",
    "resolve_device",
    "resolve_device_dtype",
    "run_context",
    "split_model_kwargs",
]


def check_int(name: str, value: Any, minimum: int) -> int:
    if isinstance(value, bool) or not isinstance(value, int) or value < minimum:
        raise ValueError(f"{name} must be an integer >= {minimum}, got {value!r}")
    return value


def check_seed(seed: Any) -> int | None:
    """``seed`` as a Python int >= 0 (any integer type, e.g. NumPy's), or None."""
    if seed is None:
        return None
    try:
        value = operator.index(seed)
    except TypeError:
        value = -1
    if isinstance(seed, bool) or value < 0:
        raise ValueError(f"seed must be None or an integer >= 0, got {seed!r}")
    return value


def draw_seed(seed: int | None) -> int:
    """``seed``, or a fresh one from torch's global random stream when it is None."""
    return int(torch.randint(0, 2**31 - 1, ()).item()) if seed is None else seed


def check_positive(name: str, value: Any, *, allow_inf: bool = False) -> float:
    """``value`` as a float if it is a real number > 0 (finite unless ``allow_inf``)."""
    ok = isinstance(value, int | float) and not isinstance(value, bool) and value > 0
    if not ok or math.isnan(value) or (math.isinf(value) and not allow_inf):
        finite = "" if allow_inf else " finite"
        raise ValueError(f"{name} must be a positive{finite} number, got {value!r}")
    return float(value)


def model_modules(model: Any) -> list[nn.Module]:
    """The torch modules a model's parameters live in: the model or the object of a bound method."""
    return [m for m in (model, getattr(model, "__self__", None)) if isinstance(m, nn.Module)]


def resolve_device(device: Any) -> torch.device:
    try:
        dev = torch.device(device)
    except (RuntimeError, TypeError, ValueError) as exc:
        raise ValueError(f"device must be a torch device such as 'cpu' or 'cuda', got {device!r}") from exc
    if dev.type != "cpu":
        try:
            torch.empty(0, device=dev)
        except (RuntimeError, AssertionError, ValueError) as exc:
            raise ValueError(f"device={device!r} is not available on this machine ({exc})") from exc
    return dev


def resolve_device_dtype(
    args: tuple, kwargs: dict, device: Any, dtype: torch.dtype | None, model: Any = None
) -> tuple[torch.device, torch.dtype]:
    """The run's device and dtype: as given, else those of the first (floating) tensor argument,
    else of the model's floating parameters (an ``nn.Module``), else CPU / torch's default."""
    tensors = [a for a in (*args, *kwargs.values()) if isinstance(a, torch.Tensor)]
    params = [
        t for m in model_modules(model) for t in (*m.parameters(), *m.buffers()) if t.is_floating_point()
    ]
    if device is None:
        device = tensors[0].device if tensors else params[0].device if params else torch.device("cpu")
    if dtype is None:
        floats = [t.dtype for t in (*tensors, *params) if t.is_floating_point()]
        dtype = floats[0] if floats else torch.get_default_dtype()
    if not (isinstance(dtype, torch.dtype) and dtype.is_floating_point):
        raise ValueError(f"dtype must be a floating torch.dtype, got {dtype!r}")
    return resolve_device(device), dtype


def move_to(value: Any, device: torch.device, dtype: torch.dtype) -> Any:
    if isinstance(value, torch.Tensor):
        if value.is_floating_point():
            return value.to(device=device, dtype=dtype)
        return value.to(device=device)
    return value


def move_arguments(
    args: tuple, kwargs: dict[str, Any], device: torch.device, dtype: torch.dtype
) -> tuple[tuple, dict[str, Any]]:
    """The model's arguments with tensors on ``device`` and floating tensors in ``dtype``."""
    moved = {k: move_to(v, device, dtype) for k, v in kwargs.items()}
    return tuple(move_to(a, device, dtype) for a in args), moved


def place_arguments(
    args: tuple, kwargs: dict[str, Any], device: Any, dtype: torch.dtype | None, model: Any = None
) -> tuple[tuple, dict[str, Any], torch.device, torch.dtype]:
    """The run's device and dtype (:func:`resolve_device_dtype`) and the arguments moved there."""
    device_, dtype_ = resolve_device_dtype(args, kwargs, device, dtype, model)
    return (*move_arguments(args, kwargs, device_, dtype_), device_, dtype_)


@contextlib.contextmanager
def run_context(model: Any, dtype: torch.dtype, device: torch.device) -> Iterator[None]:
    """Run with ``dtype`` as torch's default floating type (tracing, sampling, replays), so the
    tensors a model creates (``torch.zeros(3)``, ``torch.tensor(0.5)``) have the run's dtype.

    An ``nn.Module`` model (a ``PyroModule`` such as :class:`bayesact.models.BNN`, a GPyTorch
    or ``pyro.contrib.gp`` model, or the object of a bound method ``gp.model``) has its floating
    parameters and buffers cast **in place** to ``dtype`` and moved to ``device``
    (``module.to``), as ``model.double()`` would, and so have the floating tensors held as
    plain attributes of its submodules (``GPRegression.X``): the posterior then refers to the
    model the user holds, and Pyro's parameter store keeps pointing at the same
    ``nn.Parameter`` objects.
    The default dtype is restored on exit; the module keeps its new dtype.
    """
    for module in model_modules(model):
        tensors = [*module.parameters(), *module.buffers()]
        if any(t.is_floating_point() and t.dtype != dtype for t in tensors) or any(
            t.device != device for t in tensors
        ):
            module.to(device=device, dtype=dtype)
        for sub in module.modules():  # plain tensor attributes, e.g. GPRegression's X and y
            for name, value in list(vars(sub).items()):
                if isinstance(value, torch.Tensor) and not isinstance(value, nn.Parameter):
                    moved = move_to(value, device, dtype)
                    if moved is not value:
                        setattr(sub, name, moved)
    old = torch.get_default_dtype()
    torch.set_default_dtype(dtype)
    try:
        yield
    finally:
        torch.set_default_dtype(old)


def check_model(
    fn_name: str, model: Any, model_kwargs: dict[str, Any] | None, kwargs: dict[str, Any],
    options: Sequence[str],
) -> dict[str, Any]:
    """Check that ``model`` is callable; return its keyword arguments (:func:`split_model_kwargs`)."""
    if not callable(model):
        raise ValueError(f"model must be a callable Pyro model, got {type(model).__name__}")
    return split_model_kwargs(fn_name, model, model_kwargs, kwargs, options)


def split_model_kwargs(
    fn_name: str, model: Any, model_kwargs: dict[str, Any] | None, kwargs: dict[str, Any],
    options: Sequence[str],
) -> dict[str, Any]:
    """The model's keyword arguments: ``kwargs`` (what the sampler did not take) and the
    explicit ``model_kwargs`` dict. A name the model cannot accept is a TypeError naming it and
    the sampler's options (a misspelt option would otherwise reach the model)."""
    model_kwargs = dict(model_kwargs or {})
    both = sorted(set(model_kwargs) & set(kwargs))
    if both:
        raise TypeError(f"{fn_name}: model keyword argument(s) {both} given twice (in model_kwargs and as "
                        "keyword arguments)")
    merged = {**model_kwargs, **kwargs}
    target = model.forward if isinstance(model, nn.Module) else model
    try:
        params = inspect.signature(target).parameters.values()
    except (TypeError, ValueError):  # builtins and other callables without a signature
        return merged
    if any(p.kind is inspect.Parameter.VAR_KEYWORD for p in params):
        return merged
    names = {p.name for p in params if p.kind in (p.POSITIONAL_OR_KEYWORD, p.KEYWORD_ONLY)}
    unknown = sorted(set(merged) - names)
    if unknown:
        hints = [f"{k!r} -> {m[0]!r}" for k in unknown if (m := difflib.get_close_matches(k, options, 1))]
        hint = f" (did you mean {', '.join(hints)}?)" if hints else ""
        raise TypeError(
            f"{fn_name}: unknown argument(s) {unknown}{hint}: keyword arguments that are not "
            f"options of {fn_name} are passed to the model, which does not accept them. "
            f"Options of {fn_name}: {sorted(options)}"
        )
    return merged


def check_checkpoint_path(checkpoint: str | os.PathLike | None) -> str | None:
    """The checkpoint path, checked before sampling: its folder must exist and be writable."""
    if checkpoint is None:
        return None
    path = os.fspath(checkpoint)
    if not isinstance(path, str) or not path:
        raise ValueError(f"checkpoint must be a file path, got {checkpoint!r}")
    folder = os.path.dirname(os.path.abspath(path))
    if os.path.isdir(path):
        raise ValueError(f"checkpoint={path!r} is a directory: give a file path such as 'run.ckpt'")
    if not os.path.isdir(folder):
        raise ValueError(f"checkpoint={path!r}: the directory {folder!r} does not exist")
    if not os.access(folder, os.W_OK):
        raise ValueError(f"checkpoint={path!r}: the directory {folder!r} is not writable")
    return path


def check_observed(potential: Potential) -> None:
    for name, value in potential.observed.items():
        if isinstance(value, torch.Tensor) and value.is_floating_point():
            bad = ~torch.isfinite(value)
            if bool(bad.any()):
                nan, inf = int(value.isnan().sum()), int(value.isinf().sum())
                counts = " and ".join(f"{n} {kind}" for n, kind in ((nan, "NaN"), (inf, "infinite")) if n)
                raise ValueError(
                    f"observed site '{name}' has {counts} value(s): remove or impute them "
                    "(or mask them with poutine.mask) before sampling"
                )


def nonfinite_arguments(args: tuple, kwargs: dict) -> list[str]:
    """``"args[1] (3 NaN)"`` for every floating tensor argument holding NaN or infinite values."""
    out = []
    named = [(f"args[{i}]", a) for i, a in enumerate(args)] + [(repr(k), v) for k, v in kwargs.items()]
    for name, value in named:
        if isinstance(value, torch.Tensor) and value.is_floating_point():
            nan, inf = int(value.isnan().sum()), int(value.isinf().sum())
            if nan or inf:
                counts = ", ".join(f"{n} {kind}" for n, kind in ((nan, "NaN"), (inf, "infinite")) if n)
                out.append(f"{name} ({counts})")
    return out


def check_init(potential: Potential, init: Any, num_chains: int) -> None:
    """``init`` is None, "uniform" or a dict of known latent sites with a site's shape or
    (num_chains, *site shape)."""
    if init is None or (isinstance(init, str) and init == "uniform"):
        return
    if not isinstance(init, dict):
        raise ValueError(f"init must be None, 'uniform' or a dict of site values, got {init!r}")
    shapes = {s.name: s.shape for s in potential.sites}
    unknown = sorted(set(init) - set(shapes))
    if unknown:
        raise ValueError(f"init has unknown site(s) {unknown}; the model's latent sites are {sorted(shapes)}")
    missing = sorted(set(shapes) - set(init))
    if missing:
        raise ValueError(f"init is missing latent site(s) {missing}; it needs all of {sorted(shapes)}")
    for name, shape in shapes.items():
        got = tuple(torch.as_tensor(init[name]).shape)
        if got not in (tuple(shape), (num_chains, *shape)):
            raise ValueError(
                f"init['{name}'] has shape {got}; expected the site's shape {tuple(shape)} or "
                f"(num_chains, *shape) = {(num_chains, *shape)}"
            )


def keyword_options(fn: Callable[..., Any]) -> tuple[str, ...]:
    """The keyword-only parameters of ``fn`` (a sampler's options)."""
    return tuple(n for n, p in inspect.signature(fn).parameters.items() if p.kind is p.KEYWORD_ONLY)


class RunInputs(NamedTuple):
    """A sampler's inputs once checked: the model's arguments on the run's device and dtype, the
    seed (drawn when none was given) and the checkpoint path."""

    args: tuple
    kwargs: dict[str, Any]
    device: torch.device
    dtype: torch.dtype
    seed: int
    checkpoint: str | None


def prepare_run(
    fn_name: str, model: Any, args: tuple, model_kwargs: dict[str, Any] | None, kwargs: dict[str, Any],
    options: Sequence[str], *, device: Any, dtype: torch.dtype | None, seed: Any,
    checkpoint: str | os.PathLike | None,
) -> RunInputs:
    """What :func:`~bayesact.infer.mcmc` and :func:`~bayesact.infer.sghmc` do with their inputs
    before sampling: check the model (:func:`check_model`), the seed and the checkpoint path, and
    move the arguments to the run's device and dtype (:func:`place_arguments`)."""
    model_kwargs = check_model(fn_name, model, model_kwargs, kwargs, options)
    seed = check_seed(seed)
    path = check_checkpoint_path(checkpoint)
    args, model_kwargs, device_, dtype_ = place_arguments(args, model_kwargs, device, dtype, model)
    return RunInputs(args, model_kwargs, device_, dtype_, draw_seed(seed), path)
