"""Train a prior-fitted network from a config file: ``python -m bayesact.pfn_train CONFIG``.

Data-parallel on several processes with ``torchrun --nproc_per_node=N -m bayesact.pfn_train
CONFIG`` (gloo on CPU, NCCL on GPU; each rank draws its own datasets, only rank 0 writes).
The config is a JSON or TOML file (``.toml``) with four parts::

    output = "gp1d.pfn"                 # the trained PFN (PFN.save / PFN.load)
    checkpoint = "gp1d.ckpt"            # optional: resumable training state

    [prior]                             # "gp": GPDatasetPrior; "pyro": PyroDatasetPrior;
    type = "gp"                         # "mixture": components = [{...}, ...], weights = [...]
    num_features = 1
    kernel = "rbf"                      # rbf, matern12, matern32, matern52
    lengthscale = {gamma = [3.0, 6.0]}  # a number or {gamma | lognormal | uniform = [a, b]}
    outputscale = 1.0
    noise_std = 0.1

    [model]                             # PFN(...) settings, borders from prior draws of y
    emsize = 128
    nlayers = 4
    num_buckets = 1000

    [training]                          # train_pfn(...) options
    num_steps = 10000
    batch_size = 64
    seq_len = 100

A ``.train.json`` file next to ``output`` records the settings, the loss per step and timings.
This module sits above every layer (it builds priors and models and runs ``bayesact.infer``).
"""

from __future__ import annotations

import argparse
import importlib
import json
import math
import os
import sys
import tomllib
from collections.abc import Sequence
from pathlib import Path
from typing import Any

import torch
from torch.distributions import Distribution, Gamma, LogNormal, Uniform

from bayesact.compilation import write_json_atomically
from bayesact.infer import TrainResult, train_pfn
from bayesact.infer.pfn_training import DatasetSampler
from bayesact.models import PFN, BarDistribution
from bayesact.models.pfn import StandardizedBorders, standardized_borders
from bayesact.priors import GPDatasetPrior, MixtureDatasetPrior, PyroDatasetPrior

__all__ = ["build_model", "build_prior", "load_config", "main", "prior_draws", "run"]

_DISTRIBUTIONS = {"gamma": Gamma, "lognormal": LogNormal, "uniform": Uniform}
_SECTIONS = {"output", "checkpoint", "prior", "model", "training"}
_MODEL_KEYS = {"num_features", "emsize", "nlayers", "nhead", "nhid", "num_buckets", "max_features",
               "border_samples", "standardize_y", "query_self_attention", "seed"}
_TRAIN_KEYS = {"num_steps", "batch_size", "seq_len", "min_train", "lr", "warmup", "weight_decay", "grad_clip",
               "accumulate", "device", "amp", "checkpoint_every", "resume", "seed", "data_shards"}


def load_config(path: str | os.PathLike) -> dict[str, Any]:
    """The config as a dict: TOML for a ``.toml`` file, JSON otherwise."""
    path = os.fspath(path)
    if not os.path.isfile(path):
        raise ValueError(f"config file {path!r} does not exist")
    with open(path, "rb") as fh:
        try:
            config = tomllib.load(fh) if path.endswith(".toml") else json.load(fh)
        except (tomllib.TOMLDecodeError, json.JSONDecodeError) as exc:
            kind = "TOML" if path.endswith(".toml") else "JSON"
            raise ValueError(f"config file {path!r} is not valid {kind}: {exc}") from exc
    if not isinstance(config, dict):
        raise ValueError(f"config file {path!r} must hold a table/object at the top")
    unknown = set(config) - _SECTIONS
    if unknown:
        raise ValueError(f"config: unknown entries {sorted(unknown)}; expected {sorted(_SECTIONS)}")
    for key in ("output", "prior"):
        if key not in config:
            raise ValueError(f"config: '{key}' is missing")
    return config


def _parameter(value: Any, where: str) -> float | Distribution:
    """A number, or ``{"gamma": [concentration, rate]}`` / ``{"lognormal": [loc, scale]}`` /
    ``{"uniform": [low, high]}`` (a per-dataset hyperprior)."""
    if isinstance(value, int | float) and not isinstance(value, bool):
        return float(value)
    if isinstance(value, dict) and len(value) == 1:
        (name, args), = value.items()
        if name in _DISTRIBUTIONS and isinstance(args, list) and len(args) == 2:
            return _DISTRIBUTIONS[name](float(args[0]), float(args[1]))
    raise ValueError(f"config: '{where}' must be a number or one of "
                     f"{{{' | '.join(_DISTRIBUTIONS)} = [a, b]}}, got {value!r}")


def build_prior(spec: dict[str, Any]) -> DatasetSampler:
    """The dataset prior of a config's ``prior`` table."""
    if not isinstance(spec, dict):
        raise ValueError(f"config: 'prior' must be a table, got {spec!r}")
    kind = spec.get("type", "gp")
    if kind == "gp":
        allowed = {"type", "num_features", "kernel", "lengthscale", "outputscale", "noise_std", "ard"}
        _check_keys(spec, allowed, "prior")
        return GPDatasetPrior(
            spec.get("num_features", 1), kernel=spec.get("kernel", "rbf"),
            lengthscale=_parameter(spec.get("lengthscale", 0.6), "prior.lengthscale"),
            outputscale=_parameter(spec.get("outputscale", 1.0), "prior.outputscale"),
            noise_std=_parameter(spec.get("noise_std", 0.1), "prior.noise_std"),
            ard=spec.get("ard", False), dtype=torch.float32,
        )
    if kind == "pyro":
        _check_keys(spec, {"type", "model", "x_site", "y_site", "parallel"}, "prior")
        ref = spec.get("model")
        if not isinstance(ref, str) or ":" not in ref:
            raise ValueError(f"config: 'prior.model' must be 'module:function', got {ref!r}")
        module, _, name = ref.partition(":")
        model = getattr(importlib.import_module(module), name)
        return PyroDatasetPrior(model, x_site=spec.get("x_site", "x"), y_site=spec.get("y_site", "y"),
                                parallel=spec.get("parallel", False))
    if kind == "mixture":
        _check_keys(spec, {"type", "components", "weights", "per_batch"}, "prior")
        components = spec.get("components")
        if not isinstance(components, list) or not components:
            raise ValueError("config: 'prior.components' must be a non-empty list of prior tables")
        return MixtureDatasetPrior([build_prior(c) for c in components], spec.get("weights"),
                                   per_batch=spec.get("per_batch", False))
    raise ValueError(f"config: 'prior.type' must be 'gp', 'pyro' or 'mixture', got {kind!r}")


def _check_keys(table: dict[str, Any], allowed: set[str], where: str) -> None:
    unknown = set(table) - allowed
    if unknown:
        raise ValueError(f"config: unknown entries {sorted(unknown)} in '{where}'; "
                         f"allowed: {sorted(allowed)}")


def prior_draws(prior: DatasetSampler, num_draws: int, seq_len: int,
                generator: torch.Generator) -> tuple[torch.Tensor, int]:
    """About ``num_draws`` prior draws of y on the prior's own scale, as datasets (num_datasets,
    ``seq_len``) drawn in batches of up to 64, and the largest input dimension seen."""
    ys, width, remaining = [], 0, max(1, math.ceil(num_draws / seq_len))
    while remaining > 0:
        x, y = prior.sample_batch(min(64, remaining), seq_len, generator)
        ys.append(y)
        width = max(width, int(x.shape[-1]))
        remaining -= y.shape[0]
    return torch.cat(ys), width


def build_model(spec: dict[str, Any], prior: DatasetSampler, seq_len: int) -> PFN:
    """A PFN sized by the config's ``model`` table, its borders equal-mass under the prior's y
    (``border_samples`` prior draws, default 100 000, from a fixed seed so every rank agrees).
    With ``standardize_y`` the borders and the model's ``y_std_floor``, ``y_prior_mean`` and
    ``y_prior_std`` come from :func:`~bayesact.models.pfn.standardized_borders` of those draws (the
    rule the model applies to every training set; the last two for training sets of n < 2 points).
    ``num_features`` defaults to the widest input the border draws showed."""
    _check_keys(spec, _MODEL_KEYS, "model")
    gen = torch.Generator().manual_seed(int(spec.get("seed", 0)))
    num_buckets = spec.get("num_buckets", 1000)
    standardize = bool(spec.get("standardize_y", False))
    y, width = prior_draws(prior, int(spec.get("border_samples", 100_000)), seq_len, gen)
    if standardize:
        fitted = standardized_borders(y, num_buckets)
    else:
        borders = BarDistribution.borders_from_samples(y.reshape(-1), num_buckets)
        fitted = StandardizedBorders(borders, y_std_floor=0.0, y_prior_mean=0.0, y_prior_std=1.0)
    torch.manual_seed(int(spec.get("seed", 0)))
    return PFN(spec.get("num_features", width), num_buckets=num_buckets, emsize=spec.get("emsize", 256),
               nlayers=spec.get("nlayers", 4), nhead=spec.get("nhead", 4), nhid=spec.get("nhid"),
               borders=fitted.borders, max_features=spec.get("max_features"),
               query_self_attention=spec.get("query_self_attention", True), standardize_y=standardize,
               y_std_floor=fitted.y_std_floor, y_prior_mean=fitted.y_prior_mean,
               y_prior_std=fitted.y_prior_std)


def _device(option: Any) -> str | None:
    if option is not None:
        return str(option)
    if torch.cuda.is_available():
        return f"cuda:{int(os.environ.get('LOCAL_RANK', 0))}"
    return None


def run(config: dict[str, Any], *, resume: bool = False, progress: bool = True) -> tuple[PFN, TrainResult]:
    """Build the prior and the PFN of ``config``, train, and (on rank 0) write ``output`` and its
    ``.train.json`` record. Joins a ``torchrun`` process group when there is one."""
    training = dict(config.get("training", {}))
    _check_keys(training, _TRAIN_KEYS, "training")
    distributed = int(os.environ.get("WORLD_SIZE", "1")) > 1
    dist = torch.distributed
    if distributed and not dist.is_initialized():
        dist.init_process_group("nccl" if torch.cuda.is_available() else "gloo")
    rank = dist.get_rank() if distributed else 0
    try:
        device = _device(training.pop("device", None))
        if device and device.startswith("cuda"):
            torch.cuda.set_device(torch.device(device))
        prior = build_prior(config["prior"])
        seq_len = int(training.get("seq_len", 100))
        model = build_model(dict(config.get("model", {})), prior, seq_len)
        resume = bool(training.pop("resume", False)) or resume
        result = train_pfn(model, prior, training.pop("num_steps"), **training, device=device,
                           checkpoint=config.get("checkpoint"), resume=resume, progress=progress)
        if rank == 0:
            model.save(config["output"])
            _write_record(config, model, result)
    finally:
        if distributed and dist.is_initialized():
            dist.destroy_process_group()
    return model, result


def _write_record(config: dict[str, Any], model: PFN, result: TrainResult) -> None:
    cfg = result.config
    record = {
        "config": config,
        "num_params": sum(p.numel() for p in model.parameters()),
        "train_config": {k: str(v) if isinstance(v, torch.device | torch.dtype) else v
                         for k, v in vars(cfg).items()},
        "world_size": torch.distributed.get_world_size() if torch.distributed.is_initialized() else 1,
        "steps_done": result.steps_done,
        "seconds": result.seconds,
        "datasets_per_second": result.datasets_per_second,
        "interrupted": result.interrupted,
        "losses": [round(float(v), 5) for v in result.losses],
    }
    write_json_atomically(Path(os.fspath(config["output"]) + ".train.json"), record)


def main(argv: Sequence[str] | None = None) -> int:
    parser = argparse.ArgumentParser(prog="python -m bayesact.pfn_train",
                                     description="Train a prior-fitted network from a JSON or TOML config.")
    parser.add_argument("config", help="the config file (.json or .toml)")
    parser.add_argument("--resume", action="store_true", help="continue from the config's checkpoint")
    parser.add_argument("--no-progress", action="store_true", help="no progress bar")
    args = parser.parse_args(argv)
    try:
        config = load_config(args.config)
    except ValueError as exc:
        print(f"error: {exc}", file=sys.stderr)
        return 2
    _, result = run(config, resume=args.resume, progress=not args.no_progress)
    if int(os.environ.get("RANK", "0")) == 0:
        losses = result.losses
        tail = float(losses[-max(1, len(losses) // 10):].mean()) if len(losses) else math.nan
        print(f"trained {result.steps_done} steps in {result.seconds:.1f} s "
              f"({result.datasets_per_second:.0f} datasets/s), final loss {tail:.4f}; "
              f"wrote {config['output']}")
    return 0


if __name__ == "__main__":
    sys.exit(main())
