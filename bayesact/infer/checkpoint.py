"""Safe files for long runs: checkpoints, :func:`resume`, and the file format they share.

Every file bayesact writes (MCMC and SGHMC checkpoints, :meth:`Posterior.save
<bayesact.infer.Posterior.save>`, functional-prior fits) is a *safe file*: a one-line header
``bayesact-safe/1 sha256=<hex> size=<bytes>`` followed by a ``torch.save`` payload that holds only
tensors, numbers, strings, ``None`` and lists/tuples/dicts of them. :func:`load_checkpoint`
checks the size and the SHA-256 of the payload (a truncated or corrupted file raises a
``ValueError`` naming it) and reads it with ``torch.load(weights_only=True)``, so loading never
runs code stored in the file. The model is never pickled: a checkpoint names it by import path
(``module:qualname``) when it is a module-level function, and otherwise :func:`resume` needs it
passed again. Writes are atomic (a temporary file in the same folder, ``fsync``, ``os.replace``).
"""

from __future__ import annotations

import dataclasses
import hashlib
import importlib
import io
import os
import pickle
import sys
import tempfile
import types
import typing
from collections.abc import Callable
from typing import Any

import torch

from bayesact.infer.arguments import move_arguments, split_model_kwargs
from bayesact.infer.sites import site_value

__all__ = [
    "MCMC_FORMAT",
    "SGHMC_FORMAT",
    "ResumeFn",
    "check_latent_sites",
    "checkpoint_payload",
    "from_plain",
    "is_safe_file",
    "load_checkpoint",
    "register_format",
    "resume",
    "save_checkpoint",
    "to_plain",
]

MCMC_FORMAT = "bayesact.infer.checkpoint/2"
SGHMC_FORMAT = "bayesact.infer.sghmc-checkpoint/2"

#: ``resume_fn(payload, path, model, args, kwargs, progress)`` continues a run of one format.
ResumeFn = Callable[[dict[str, Any], str, Callable[..., Any], tuple, dict[str, Any], bool], Any]
_RESUMERS: dict[str, ResumeFn] = {}


def register_format(fmt: str, resume_fn: ResumeFn) -> None:
    """Let :func:`resume` continue checkpoints of format ``fmt`` with ``resume_fn`` (each run
    loop registers its own format when its module is imported, so this module imports none)."""
    _RESUMERS[fmt] = resume_fn
_MAGIC = b"bayesact-safe/1"
_PLAIN_SCALARS = (bool, int, float, str, type(None))


# ------------------------------------------------------------------------------------------
# plain data: what a safe file may hold
# ------------------------------------------------------------------------------------------
def to_plain(obj: Any) -> Any:
    """``obj`` as plain data: dataclasses and named tuples become dicts of their fields,
    ``torch.dtype`` and ``torch.device`` their names, tensors are detached; tensors, numbers,
    strings, ``None`` and lists/tuples/dicts of them are kept. :func:`from_plain` rebuilds.

    Raises:
        TypeError: ``obj`` holds something else (the message gives where).
    """
    return _plain(obj, "value")


def _plain(obj: Any, where: str) -> Any:
    if isinstance(obj, torch.Tensor):
        return obj.detach().as_subclass(torch.Tensor)
    if isinstance(obj, _PLAIN_SCALARS):
        return obj
    if isinstance(obj, torch.dtype | torch.device):
        return str(obj)
    if dataclasses.is_dataclass(obj) and not isinstance(obj, type):
        return {f.name: _plain(getattr(obj, f.name), f"{where}.{f.name}") for f in dataclasses.fields(obj)}
    if isinstance(obj, tuple) and hasattr(obj, "_fields"):  # a NamedTuple
        return {k: _plain(v, f"{where}.{k}") for k, v in zip(obj._fields, obj, strict=True)}
    if isinstance(obj, dict):
        for k in obj:
            if not isinstance(k, str | int):
                raise TypeError(f"{where}: dict keys must be str or int, got {type(k).__name__}")
        return {k: _plain(v, f"{where}[{k!r}]") for k, v in obj.items()}
    if isinstance(obj, list | tuple):  # torch.Size and other tuple subclasses become tuples
        items = [_plain(v, f"{where}[{i}]") for i, v in enumerate(obj)]
        return items if isinstance(obj, list) else tuple(items)
    raise TypeError(
        f"{where} is a {type(obj).__module__}.{type(obj).__qualname__}: a safe file holds only "
        "tensors, numbers, strings, None and lists/tuples/dicts of them"
    )


def _is_plain(obj: Any) -> bool:
    try:
        _plain(obj, "value")
    except TypeError:
        return False
    return True


def _dtype(name: str) -> torch.dtype:
    value = getattr(torch, str(name).removeprefix("torch."), None)
    if not isinstance(value, torch.dtype):
        raise ValueError(f"unknown torch dtype {name!r} in the file")
    return value


def _rebuild(tp: Any, value: Any) -> Any:
    if tp is torch.dtype:
        return _dtype(value)
    if tp is torch.device:
        return torch.device(value)
    if isinstance(tp, type) and isinstance(value, dict) and (
        dataclasses.is_dataclass(tp) or (issubclass(tp, tuple) and hasattr(tp, "_fields"))
    ):
        return from_plain(tp, value)
    return value


def from_plain(cls: type[Any], data: dict[str, Any]) -> Any:
    """Rebuild a dataclass or NamedTuple ``cls`` from :func:`to_plain`'s dict, with nested
    dataclasses, named tuples, dtypes and devices restored from the field annotations."""
    if not isinstance(data, dict):
        raise ValueError(f"expected the fields of {cls.__name__} in the file, got {type(data).__name__}")
    hints = typing.get_type_hints(cls)
    names = [f.name for f in dataclasses.fields(cls)] if dataclasses.is_dataclass(cls) else list(cls._fields)
    missing = [n for n in names if n not in data]
    if missing:
        raise ValueError(f"the file lacks the field(s) {missing} of {cls.__name__}")
    return cls(**{n: _rebuild(hints.get(n), data[n]) for n in names})


# ------------------------------------------------------------------------------------------
# the file: header + checksum + weights-only payload, written atomically
# ------------------------------------------------------------------------------------------
def save_checkpoint(path: str | os.PathLike, payload: dict[str, Any]) -> None:
    """Write ``payload`` (a dict with a ``"format"`` string) to ``path`` as a safe file.

    Objects are first converted with :func:`to_plain` (dataclasses, named tuples, dtypes);
    anything else that is not plain data raises ``TypeError`` before the file is touched. The
    write is atomic: a temporary file in the same folder, flushed and ``fsync``-ed, then
    ``os.replace``-d over ``path``, so a crash leaves either the old or the new file.
    """
    path = os.fspath(path)
    if not isinstance(payload, dict) or not isinstance(payload.get("format"), str):
        raise TypeError("payload must be a dict with a 'format' string")
    buffer = io.BytesIO()
    torch.save(_plain(payload, "payload"), buffer)
    data = buffer.getvalue()
    header = b"%s sha256=%s size=%d\n" % (_MAGIC, hashlib.sha256(data).hexdigest().encode(), len(data))
    folder = os.path.dirname(os.path.abspath(path))
    fd, tmp = tempfile.mkstemp(prefix=f".{os.path.basename(path)}.", suffix=".tmp", dir=folder)
    try:
        with os.fdopen(fd, "wb") as fh:
            fh.write(header)
            fh.write(data)
            fh.flush()
            os.fsync(fh.fileno())
        os.replace(tmp, path)
    except BaseException:
        if os.path.exists(tmp):
            os.remove(tmp)
        raise
    try:  # make the rename itself durable (not possible on every platform)
        dir_fd = os.open(folder, os.O_RDONLY)
    except OSError:
        return
    try:
        os.fsync(dir_fd)
    except OSError:
        pass
    finally:
        os.close(dir_fd)


def is_safe_file(path: str | os.PathLike) -> bool:
    """Whether ``path`` starts with the safe-file header (nothing else is checked)."""
    with open(os.fspath(path), "rb") as fh:
        return fh.read(len(_MAGIC)) == _MAGIC


def load_checkpoint(path: str | os.PathLike, expected_format: str | tuple[str, ...]) -> dict[str, Any]:
    """Read a file written by :func:`save_checkpoint`, checking its integrity and format.

    The payload's size and SHA-256 must match the header, and it is unpickled with
    ``torch.load(weights_only=True)``: tensors and plain data only, never code.

    Args:
        path: the file.
        expected_format: the accepted value(s) of the payload's ``"format"``.

    Raises:
        ValueError: no such file, not a safe file (e.g. an old pickled checkpoint, which is
            refused rather than unpickled), truncated, corrupted (checksum mismatch), holding
            objects other than plain data, or of another format; the message names the file.
    """
    path = os.fspath(path)
    expected = (expected_format,) if isinstance(expected_format, str) else tuple(expected_format)
    if not os.path.isfile(path):
        raise ValueError(f"no checkpoint at {path!r}")
    with open(path, "rb") as fh:
        header = fh.readline(256)
        data = fh.read()
    parts = header.rstrip(b"\n").split(b" ")
    if parts[0] != _MAGIC or len(parts) != 3 or not header.endswith(b"\n"):
        raise ValueError(
            f"{path!r} is not a bayesact safe file (no '{_MAGIC.decode()}' header): it may be a "
            "file written by an older bayesact with pickled objects, which is refused because "
            "unpickling can run arbitrary code"
        )
    try:
        digest = parts[1].removeprefix(b"sha256=").decode()
        size = int(parts[2].removeprefix(b"size="))
    except ValueError as exc:
        raise ValueError(f"{path!r} has a malformed header {header!r}") from exc
    if len(data) != size:
        raise ValueError(
            f"{path!r} is truncated or damaged: {len(data)} bytes of payload, the header says {size}"
        )
    if hashlib.sha256(data).hexdigest() != digest:
        raise ValueError(f"{path!r} is corrupted: the SHA-256 of its payload does not match its header")
    try:
        payload = torch.load(io.BytesIO(data), weights_only=True, map_location=None)
    except pickle.UnpicklingError as exc:
        raise ValueError(
            f"{path!r} was refused: it holds objects other than tensors and plain data "
            f"(loading with weights_only=True): {exc}"
        ) from exc
    except Exception as exc:
        raise ValueError(f"{path!r} could not be read as a bayesact safe file: {exc!r}") from exc
    fmt = payload.get("format") if isinstance(payload, dict) else None
    if fmt not in expected:
        raise ValueError(f"{path!r} has format {fmt!r}, expected {' or '.join(map(repr, expected))}")
    return payload


# ------------------------------------------------------------------------------------------
# the model (by import path) and the fingerprint of model and data
# ------------------------------------------------------------------------------------------
def model_reference(model: Any) -> str | None:
    """``"module:qualname"`` for a module-level Python function, else ``None``."""
    if not isinstance(model, types.FunctionType):
        return None
    qualname = getattr(model, "__qualname__", "")
    if "<" in qualname or "." in qualname:  # a lambda, a nested function, a method
        return None
    return f"{model.__module__}:{qualname}"


_HINT = "pass the model and its arguments: resume(path, model, *args)"


def resolve_model(ref: str | None, path: str) -> Callable[..., Any]:
    """Import the model named by :func:`model_reference` (only a module-level, non-stdlib Python
    function whose own module and name match the reference)."""
    if ref is None:
        raise ValueError(
            f"{path!r} does not name an importable model (it was a lambda, a nested function, a "
            f"method or a module instance, which are never pickled): {_HINT}"
        )
    module_name, _, name = ref.partition(":")
    if module_name == "__main__":
        raise ValueError(
            f"the model of {path!r} is '{name}' from the script that ran it (__main__), which "
            f"cannot be imported from here: {_HINT}"
        )
    top = module_name.split(".")[0]
    if top in sys.stdlib_module_names or top in ("builtins", "torch", "pyro"):
        raise ValueError(f"{path!r} names {ref!r} as its model, which is refused: {_HINT}")
    try:
        obj = getattr(importlib.import_module(module_name), name)
    except (ImportError, AttributeError) as exc:
        raise ValueError(f"could not import the model {ref!r} of {path!r} ({exc}): {_HINT}") from exc
    if model_reference(obj) != ref:
        raise ValueError(f"{ref!r} (named by {path!r}) is not a module-level function: {_HINT}")
    return obj


def _describe(value: Any) -> dict[str, Any]:
    if isinstance(value, torch.Tensor):
        flat = value.detach().cpu().contiguous().reshape(-1)
        digest = hashlib.sha256(flat.view(torch.uint8).numpy().tobytes()).hexdigest()
        return {"kind": "tensor", "shape": list(value.shape), "dtype": str(value.dtype), "sha256": digest}
    if isinstance(value, _PLAIN_SCALARS):
        return {"kind": "value", "value": repr(value)}
    return {"kind": f"{type(value).__module__}.{type(value).__qualname__}"}


def latent_shapes(model: Callable[..., Any], args: tuple, kwargs: dict) -> dict[str, list[int]]:
    """Latent site name -> shape, from one prior trace (torch's global random stream is kept)."""
    from bayesact.infer.potential import trace_model

    with torch.random.fork_rng(devices=[]):
        tr = trace_model(model, args, kwargs)
    return {
        name: list(site_value(site).shape)
        for name, site in tr.nodes.items()
        if site["type"] == "sample" and not site["is_observed"]
    }


def fingerprint(
    model: Callable[..., Any], args: tuple, kwargs: dict, latent: dict[str, Any] | None = None
) -> dict[str, Any]:
    """Shapes, dtypes and SHA-256 of the tensor arguments, the other arguments' values, and
    the latent site names and shapes (``latent``, or one prior trace of the model)."""
    if latent is None:
        latent = latent_shapes(model, args, kwargs)
    shapes = {str(k): [int(n) for n in v] for k, v in latent.items()}
    return {**data_fingerprint(args, kwargs), "latent": shapes}


def data_fingerprint(args: tuple, kwargs: dict) -> dict[str, Any]:
    """Shapes, dtypes and SHA-256 of the tensor arguments and the other arguments' values."""
    return {
        "args": [_describe(a) for a in args],
        "kwargs": {str(k): _describe(v) for k, v in kwargs.items()},
    }


def _differences(old: dict[str, Any], new: dict[str, Any], label: str) -> list[str]:
    if old == new:
        return []
    if old.get("kind") != new.get("kind"):
        return [f"{label} is a {new.get('kind')} here but was a {old.get('kind')}"]
    if old["kind"] == "value":
        return [f"{label} is {new['value']} here but was {old['value']}"]
    out = []
    for key, what in (("shape", "shape"), ("dtype", "dtype")):
        if old.get(key) != new.get(key):
            out.append(f"{label} has {what} {new.get(key)} here but {old.get(key)} in the checkpoint")
    if not out and old.get("sha256") != new.get("sha256"):
        out.append(f"{label} has the same shape and dtype but different values (data hash differs)")
    return out


def _latent_problems(old_lat: dict[str, Any], new_lat: dict[str, Any]) -> list[str]:
    problems = [f"latent site '{n}' of the checkpoint is missing from the model"
                for n in sorted(set(old_lat) - set(new_lat))]
    problems += [f"the model has latent site '{n}', which the checkpoint lacks"
                 for n in sorted(set(new_lat) - set(old_lat))]
    for name in sorted(set(old_lat) & set(new_lat)):
        if list(old_lat[name]) != list(new_lat[name]):
            problems.append(
                f"latent site '{name}' has shape {tuple(new_lat[name])} here but "
                f"{tuple(old_lat[name])} in the checkpoint"
            )
    return problems


def _refuse(problems: list[str], path: str) -> None:
    if problems:
        raise ValueError(
            f"the model or data differ from the run checkpointed in {path!r}: " + "; ".join(problems)
        )


def check_fingerprint(stored: dict[str, Any], current: dict[str, Any], path: str) -> None:
    """Refuse a model or data that differ from the checkpointed run, naming what differs
    (the latent sites only when ``current`` has them)."""
    problems: list[str] = []
    old_args, new_args = stored.get("args", []), current["args"]
    if len(old_args) != len(new_args):
        problems.append(f"{len(new_args)} positional argument(s) here but {len(old_args)} in the checkpoint")
    for i, (old, new) in enumerate(zip(old_args, new_args, strict=False)):
        problems += _differences(old, new, f"argument {i + 1} (args[{i}])")
    old_kw, new_kw = stored.get("kwargs", {}), current["kwargs"]
    for key in sorted(set(old_kw) ^ set(new_kw)):
        where = "here only" if key in new_kw else "in the checkpoint only"
        problems.append(f"model keyword argument '{key}' given {where}")
    for key in sorted(set(old_kw) & set(new_kw)):
        problems += _differences(old_kw[key], new_kw[key], f"model keyword argument '{key}'")
    if "latent" in current:
        problems += _latent_problems(stored.get("latent", {}), current["latent"])
    _refuse(problems, path)


def check_latent_sites(payload: dict[str, Any], latent: dict[str, Any], path: str) -> None:
    """Refuse a model whose latent sites (name -> shape) are not those of the checkpointed run;
    :func:`~bayesact.infer.run.resume_run` calls this once the potential is built."""
    _refuse(_latent_problems(payload["fingerprint"].get("latent", {}), latent), path)


def checkpoint_payload(
    fmt: str, config: Any, state: Any, model: Callable[..., Any], args: tuple, kwargs: dict,
    latent: dict[str, Any] | None = None,
) -> dict[str, Any]:
    """The checkpoint contents as plain data: the config and state (dataclasses) as dicts, the
    model by import path (``None`` when it has none), the arguments when they are plain data,
    and the :func:`fingerprint` of model and data that :func:`resume` checks (``latent``: site
    name -> shape, or ``None`` to trace the model once)."""
    storable = _is_plain((args, kwargs))
    return {
        "format": fmt,
        "config": to_plain(config),
        "state": to_plain(state),
        "model_ref": model_reference(model),
        "args": tuple(args) if storable else None,
        "kwargs": dict(kwargs) if storable else None,
        "fingerprint": fingerprint(model, args, kwargs, latent),
    }


def resume(
    path: str | os.PathLike,
    model: Callable[..., Any] | None = None,
    *args: Any,
    progress: bool = True,
    model_kwargs: dict[str, Any] | None = None,
    **kwargs: Any,
) -> Any:
    """Continue an interrupted :func:`~bayesact.infer.mcmc` or :func:`~bayesact.infer.sghmc`
    run from its checkpoint to the requested count.

    The checkpoint is read with ``torch.load(weights_only=True)`` after its checksum is
    verified, so it cannot run code. Without ``model`` the model is imported by the path the
    checkpoint names (a module-level function of an importable module, not ``__main__``) and
    called with the stored arguments: resume files you did not write only with the model
    passed. A passed ``model`` without arguments reuses the stored ones. The model and data
    must match the checkpointed run (tensor shapes, dtypes and contents, then the latent sites
    once the model is traced), or a ``ValueError`` names what differs. The random stream
    continues where it stopped, so an interrupted and resumed run gives the same draws as an
    uninterrupted one (on CPU).

    Args:
        path: the checkpoint file written by ``mcmc(..., checkpoint=path)`` or ``sghmc``.
        model: the model of the run (default: imported by the path the checkpoint names).
        *args: the model's positional arguments (default: the stored ones).
        progress: show a progress bar (on a terminal).
        model_kwargs: the model's keyword arguments as a dict (for names that clash with
            this function's options).
        **kwargs: the model's keyword arguments, as given to the sampler.

    Returns:
        The :class:`~bayesact.infer.Posterior` of the whole run.
    """
    path = os.fspath(path)
    payload = load_checkpoint(path, tuple(_RESUMERS))
    if model is None:
        model = resolve_model(payload.get("model_ref"), path)
    if not args and model_kwargs is None and not kwargs:
        if payload.get("args") is None:
            raise ValueError(f"{path!r} could not store the model's arguments (not plain data): {_HINT}")
        args, model_kwargs = tuple(payload["args"]), dict(payload["kwargs"])
    else:
        model_kwargs = split_model_kwargs("resume", model, model_kwargs, kwargs, ("progress", "model_kwargs"))
    config = payload["config"]
    dtype, device = _dtype(config["dtype"]), torch.device(config["device"])
    args, kwargs = move_arguments(args, model_kwargs or {}, device, dtype)
    # the data now; the latent sites in run.resume_run, once the model is traced
    check_fingerprint(payload["fingerprint"], data_fingerprint(args, kwargs), path)
    return _RESUMERS[payload["format"]](payload, path, model, args, kwargs, progress)
