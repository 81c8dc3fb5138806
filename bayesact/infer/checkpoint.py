"""Checkpoints of long runs: atomic saves of the sampler state, and :func:`resume`.

A checkpoint is a ``torch.save`` file holding the run's configuration, its complete state
(position, adaptation, draws so far, the random stream) and, when they can be pickled, the
model and its arguments. Both samplers (:func:`~bayesact.infer.mcmc` and
:func:`~bayesact.infer.sghmc`) write one; :func:`resume` continues either.
"""

from __future__ import annotations

import os
import pickle
from collections.abc import Callable
from typing import Any

import torch

__all__ = ["MCMC_FORMAT", "SGHMC_FORMAT", "checkpoint_payload", "resume", "save_checkpoint"]

MCMC_FORMAT = "bayesact.infer.checkpoint/1"
SGHMC_FORMAT = "bayesact.infer.sghmc-checkpoint/1"


def save_checkpoint(path: str, payload: dict[str, Any]) -> None:
    """Write ``payload`` to ``path`` atomically (a temporary file, then a rename)."""
    tmp = f"{path}.tmp"
    torch.save(payload, tmp)
    os.replace(tmp, path)


def _picklable(obj: Any) -> bool:
    try:
        pickle.dumps(obj)
    except Exception:
        return False
    return True


def checkpoint_payload(
    fmt: str, config: dict[str, Any], state: Any, model: Callable[..., Any], args: tuple, kwargs: dict
) -> dict[str, Any]:
    """The checkpoint contents; the model and its arguments only when they can be pickled."""
    keep = _picklable((model, args, kwargs))
    return {
        "format": fmt,
        "config": config,
        "state": state,
        "model": model if keep else None,
        "args": args if keep else None,
        "kwargs": kwargs if keep else None,
    }


def resume(
    path: str | os.PathLike,
    model: Callable[..., Any] | None = None,
    *args: Any,
    progress: bool = True,
    model_kwargs: dict[str, Any] | None = None,
) -> Any:
    """Continue an interrupted :func:`~bayesact.infer.mcmc` or :func:`~bayesact.infer.sghmc`
    run from its checkpoint to the requested count.

    The model and its arguments are read from the checkpoint when they could be pickled
    (module-level functions); otherwise pass them again. The random stream continues where
    it stopped, so an interrupted and resumed run gives the same draws as an uninterrupted one
    (on CPU).

    Returns:
        The :class:`~bayesact.infer.Posterior` of the whole run.
    """
    path = os.fspath(path)
    if not os.path.exists(path):
        raise ValueError(f"no checkpoint at {path!r}")
    payload = torch.load(path, weights_only=False)
    fmt = payload.get("format") if isinstance(payload, dict) else None
    if fmt not in (MCMC_FORMAT, SGHMC_FORMAT):
        raise ValueError(f"{path!r} is not a bayesact MCMC or SGHMC checkpoint")
    if model is None:
        model = payload["model"]
        args = payload["args"] or ()
        model_kwargs = payload["kwargs"] or {}
        if model is None:
            raise ValueError(
                "the checkpoint could not store the model (not picklable): "
                "call resume(path, model, *args)"
            )
    if fmt == MCMC_FORMAT:
        from bayesact.infer.sampler import resume_mcmc

        return resume_mcmc(payload, path, model, args, model_kwargs or {}, progress)
    from bayesact.infer.sghmc import resume_sghmc

    return resume_sghmc(payload, path, model, args, model_kwargs or {}, progress)
