"""Training prior-fitted networks (PFNs) on datasets drawn from a prior.

Müller, Hollmann, Pineda Arango, Grabocka & Hutter (2022), "Transformers Can Do Bayesian
Inference", ICLR. Each step draws a batch of datasets of N = ``seq_len`` points from the prior,
splits every dataset of the batch at the same n ∈ {min_train, …, N − 1} drawn with probability
∝ 1/(N − n) (large n over-sampled so that every n sees about as many query points), and
minimises the prior-data negative log-likelihood

    ℓ(θ) = E_{D ~ p(D)} [ −(1/m) Σ_{i > n} log q_θ(y_i | x_i, D_{1..n}) ],   m = N − n,

whose minimiser is the posterior predictive distribution when the model family contains it.
Adam(W) with linear warm-up and cosine decay, gradient-norm clipping, gradient accumulation,
bf16 autocast on GPU, checkpoints (atomic safe files, weights-only loading) and data-parallel
training under ``torchrun`` (DDP: each rank draws its own share of the batch).

This module is generic (layer rule): the model is any ``nn.Module`` called as
``model(x_train, y_train, x_test)`` returning a distribution with ``log_prob(y_test)`` (B, m),
and the prior any object with ``sample_batch(batch_size, num_points, generator)``.
"""

from __future__ import annotations

import contextlib
import math
import os
import signal
import threading
import time
from collections.abc import Iterator
from dataclasses import asdict, dataclass
from typing import Any, Protocol, runtime_checkable

import torch
from torch import Tensor, nn
from tqdm.auto import tqdm

from bayesact.infer.arguments import check_checkpoint_path, check_seed, resolve_device
from bayesact.infer.checkpoint import (
    data_fingerprint,
    from_plain,
    load_checkpoint,
    register_format,
    save_checkpoint,
)
from bayesact.infer.phases import Phase, run_phases, warn_user

__all__ = [
    "PFN_FORMAT",
    "DatasetSampler",
    "PredictiveDistribution",
    "TrainConfig",
    "TrainResult",
    "num_train_probabilities",
    "sample_num_train",
    "shard_seed",
    "train_pfn",
]

PFN_FORMAT = "bayesact.infer.pfn-checkpoint/1"


@runtime_checkable
class DatasetSampler(Protocol):
    """A prior over datasets, sampled in batches (:mod:`bayesact.priors.dataset`)."""

    def sample_batch(
        self, batch_size: int, num_points: int, generator: torch.Generator | None = None
    ) -> tuple[Tensor, Tensor]:
        """x (batch_size, num_points, d) and y (batch_size, num_points), reproducible from ``generator``."""
        ...


@runtime_checkable
class PredictiveDistribution(Protocol):
    """What a PFN returns: a predictive distribution over the query targets."""

    def log_prob(self, value: Tensor) -> Tensor:
        """log q(y_test | x_test, D_train) for y_test (B, m): a tensor (B, m)."""
        ...


@dataclass
class TrainConfig:
    """Everything that fixes a training run besides the model and the prior (stored in checkpoints)."""

    num_steps: int
    batch_size: int
    seq_len: int
    min_train: int
    lr: float
    warmup: int
    weight_decay: float
    grad_clip: float | None
    accumulate: int
    amp: bool
    seed: int
    data_shards: int
    checkpoint_every: int
    device: torch.device
    dtype: torch.dtype


@dataclass
class TrainResult:
    """The outcome of :func:`train_pfn` (the trained model is the one passed, updated in place).

    Attributes:
        losses: (steps_done,) mean prior-data NLL per step (nats per query point; averaged over
            ranks under DDP).
        lr: (steps_done,) learning rate used at each step.
        num_train: (steps_done, accumulate) the training-set size n of each (micro-)batch.
        seconds: training wall-clock time, resumed sessions included.
        datasets_per_second: datasets drawn and trained on per second (all ranks).
        steps_done: optimiser steps done.
        interrupted: stopped by Ctrl-C (the work so far is kept; see ``checkpoint``).
        config: the run's :class:`TrainConfig`.
        checkpoint: the checkpoint path, if any.
    """

    losses: Tensor
    lr: Tensor
    num_train: Tensor
    seconds: float
    datasets_per_second: float
    steps_done: int
    interrupted: bool
    config: TrainConfig
    checkpoint: str | None


# ------------------------------------------------------------------------------------------
# the pieces: training-set sizes, learning rate, seeds
# ------------------------------------------------------------------------------------------
def num_train_probabilities(seq_len: int, min_train: int = 0) -> Tensor:
    """P(n) ∝ 1/(N − n) for n = min_train … N − 1 (float64, length N − min_train)."""
    n = torch.arange(min_train, seq_len, dtype=torch.float64)
    weights = 1.0 / (seq_len - n)
    return weights / weights.sum()


def sample_num_train(seq_len: int, generator: torch.Generator, min_train: int = 0) -> int:
    """One training-set size n ∈ {min_train, …, N − 1} with P(n) ∝ 1/(N − n) (Müller et al. 2022)."""
    probs = num_train_probabilities(seq_len, min_train)
    return min_train + int(torch.multinomial(probs, 1, generator=generator))


def learning_rate(step: int, lr: float, warmup: int, num_steps: int) -> float:
    """Linear warm-up over ``warmup`` steps, then cosine decay to 0 at ``num_steps``."""
    if step < warmup:
        return lr * (step + 1) / warmup
    progress = (step - warmup) / max(1, num_steps - warmup)
    return lr * 0.5 * (1.0 + math.cos(math.pi * min(1.0, progress)))


def default_lr(num_params: int) -> float:
    """The PFN authors' heuristic lr = 0.003239 − 0.0001395·log(#params), clamped to [1e-5, 1e-3]."""
    return min(1e-3, max(1e-5, 0.003239 - 0.0001395 * math.log(max(num_params, 1))))


def shard_seed(seed: int, shard: int) -> int:
    """The seed of data stream ``shard`` (a rank's datasets under DDP) for a run seeded ``seed``."""
    return (seed + 1_000_003 * (shard + 1)) % 2**63


def _generator(seed: int) -> torch.Generator:
    gen = torch.Generator()
    gen.manual_seed(seed)
    return gen


@contextlib.contextmanager
def _defer_interrupt() -> Iterator[None]:
    """Hold a Ctrl-C until the block ends (an optimiser step is never half applied)."""
    if threading.current_thread() is not threading.main_thread():
        yield
        return
    received: list[Any] = []
    previous = signal.signal(signal.SIGINT, lambda signum, frame: received.append((signum, frame)))
    try:
        yield
    finally:
        signal.signal(signal.SIGINT, previous)
        if received and callable(previous):
            previous(*received[0])


# ------------------------------------------------------------------------------------------
# argument checks
# ------------------------------------------------------------------------------------------
def _int(name: str, value: Any, minimum: int) -> int:
    if isinstance(value, bool) or not isinstance(value, int) or value < minimum:
        raise ValueError(f"'{name}' must be an int >= {minimum}, got {value!r}")
    return value


def _positive(name: str, value: Any, *, allow_zero: bool = False) -> float:
    ok = isinstance(value, int | float) and not isinstance(value, bool) and math.isfinite(value)
    if not ok or value < 0 or (value == 0 and not allow_zero):
        raise ValueError(f"'{name}' must be a finite number {'>= 0' if allow_zero else '> 0'}, got {value!r}")
    return float(value)


def _distributed() -> tuple[int, int]:
    """(rank, world size) of an initialised default process group, else (0, 1)."""
    dist = torch.distributed
    if dist.is_available() and dist.is_initialized():
        return dist.get_rank(), dist.get_world_size()
    return 0, 1


def _model_dtype(model: nn.Module) -> torch.dtype:
    floats = [p.dtype for p in model.parameters() if p.is_floating_point()]
    return floats[0] if floats else torch.get_default_dtype()


# ------------------------------------------------------------------------------------------
# the run
# ------------------------------------------------------------------------------------------
class _PriorDataNLL(nn.Module):
    """−mean log q(y_test | x_test, D_train): the model and its loss as one module, so that DDP
    sees the loss tensor (a distribution object would hide the graph from it)."""

    def __init__(self, model: nn.Module, amp: bool) -> None:
        super().__init__()
        self.model = model
        self.amp = amp

    def forward(self, x_train: Tensor, y_train: Tensor, x_test: Tensor, y_test: Tensor) -> Tensor:
        out = self.model(x_train, y_train, x_test)
        if not isinstance(out, PredictiveDistribution):
            raise TypeError(
                "'pfn' must return a distribution with log_prob(y_test) from "
                f"pfn(x_train, y_train, x_test), got {type(out).__name__}"
            )
        log_prob = out.log_prob(y_test)
        if not isinstance(log_prob, Tensor) or log_prob.shape != y_test.shape:
            raise ValueError(f"the PFN's log_prob(y_test) must have shape {tuple(y_test.shape)} "
                             f"(batch, queries), got {getattr(log_prob, 'shape', type(log_prob).__name__)}")
        return -(log_prob.float() if self.amp else log_prob).mean()


class _Run:
    def __init__(self, model: nn.Module, prior: DatasetSampler, cfg: TrainConfig,
                 checkpoint: str | None, rank: int, world: int) -> None:
        self.model, self.prior, self.cfg = model, prior, cfg
        self.checkpoint, self.rank, self.world = checkpoint, rank, world
        params = [p for p in model.parameters() if p.requires_grad]
        self.params = params
        self.optimizer = torch.optim.AdamW(params, lr=cfg.lr, weight_decay=cfg.weight_decay)
        self.net: nn.Module = _PriorDataNLL(model, cfg.amp)
        if world > 1:
            from torch.nn.parallel import DistributedDataParallel

            ids = [cfg.device.index] if cfg.device.type == "cuda" else None
            self.net = DistributedDataParallel(self.net, device_ids=ids, find_unused_parameters=True)
        self.split_gen = _generator(cfg.seed)
        self.shards = [rank] if world > 1 else list(range(cfg.data_shards))
        self.data_gens = {s: _generator(shard_seed(cfg.seed, s)) for s in range(cfg.data_shards)}
        self.step = 0
        self.losses = torch.full((cfg.num_steps,), math.nan, dtype=torch.float64)
        self.loss_dev = torch.zeros(cfg.num_steps, dtype=torch.float64, device=cfg.device)
        self.lrs = torch.full((cfg.num_steps,), math.nan, dtype=torch.float64)
        self.num_train = torch.full((cfg.num_steps, cfg.accumulate), -1, dtype=torch.long)
        self.seconds = 0.0  # finished phases (all sessions)
        self.phase_start: float | None = None  # perf_counter at the start of the running phase

    # -- state -------------------------------------------------------------------------------
    def _rng_state(self) -> tuple[Tensor, dict[int, Tensor]]:
        return self.split_gen.get_state(), {s: g.get_state() for s, g in self.data_gens.items()}

    def _set_rng_state(self, state: tuple[Tensor, dict[int, Tensor]]) -> None:
        self.split_gen.set_state(state[0])
        for s, g in self.data_gens.items():
            g.set_state(state[1][s])

    def state(self) -> dict[str, Any]:
        split, data = self._rng_state()
        gens = [data[s] for s in range(self.cfg.data_shards)]
        if self.world > 1:  # every rank's own stream, gathered for rank 0's file
            gathered: list[Any] = [None] * self.world
            torch.distributed.all_gather_object(gathered, data[self.rank])
            gens = list(gathered)
        self._sync_losses()
        return {
            "step": self.step,
            "model": {k: v.detach().cpu() for k, v in self.model.state_dict().items()},
            "optimizer": self.optimizer.state_dict(),
            "split_generator": split,
            "data_generators": gens,
            "losses": self.losses[: self.step].clone(),
            "lr": self.lrs[: self.step].clone(),
            "num_train": self.num_train[: self.step].clone(),
            "seconds": self.seconds + (0.0 if self.phase_start is None
                                       else time.perf_counter() - self.phase_start),
        }

    def load(self, payload: dict[str, Any], path: str) -> None:
        st = payload["state"]
        self.model.load_state_dict(st["model"])
        self.optimizer.load_state_dict(st["optimizer"])
        gens = st["data_generators"]
        if len(gens) != self.cfg.data_shards:
            raise ValueError(f"{path!r} has {len(gens)} data streams, this run {self.cfg.data_shards}")
        self.split_gen.set_state(st["split_generator"])
        for s, g in self.data_gens.items():
            g.set_state(gens[s])
        self.step = int(st["step"])
        k = self.step
        self.losses[:k] = st["losses"]
        self.loss_dev[:k] = st["losses"].to(self.loss_dev)
        self.lrs[:k] = st["lr"]
        self.num_train[:k] = st["num_train"]
        self.seconds = float(st["seconds"])

    def save(self) -> None:
        state = self.state()  # collective under DDP: every rank takes part
        if self.checkpoint is None or self.rank != 0:
            return
        cfg = asdict(self.cfg)
        save_checkpoint(self.checkpoint, {
            "format": PFN_FORMAT, "config": cfg, "state": state, "model_ref": None, "args": None,
            "kwargs": None, "fingerprint": data_fingerprint((self.prior,), {}),
        })

    def _sync_losses(self) -> None:
        k = self.step
        values = self.loss_dev[:k].clone()
        if self.world > 1:
            torch.distributed.all_reduce(values)
            values /= self.world
        self.losses[:k] = values.double().cpu()

    # -- one step ----------------------------------------------------------------------------
    def _batch(self, n_points: int) -> tuple[Tensor, Tensor]:
        cfg = self.cfg
        per_shard = cfg.batch_size // cfg.data_shards
        xs, ys = [], []
        for s in self.shards:
            x, y = self.prior.sample_batch(per_shard, n_points, self.data_gens[s])
            if not isinstance(x, Tensor) or not isinstance(y, Tensor) or x.dim() != 3 \
                    or x.shape[:2] != (per_shard, n_points) or y.shape != (per_shard, n_points):
                raise ValueError(
                    f"'prior'.sample_batch({per_shard}, {n_points}, generator) must return x "
                    f"({per_shard}, {n_points}, d) and y ({per_shard}, {n_points}), got "
                    f"{getattr(x, 'shape', type(x).__name__)} and {getattr(y, 'shape', type(y).__name__)}"
                )
            xs.append(x)
            ys.append(y)
        x, y = torch.cat(xs), torch.cat(ys)
        return (x.to(device=cfg.device, dtype=cfg.dtype, non_blocking=True),
                y.to(device=cfg.device, dtype=cfg.dtype, non_blocking=True))

    def _loss(self, x: Tensor, y: Tensor, n: int) -> Tensor:
        cfg = self.cfg
        with torch.autocast(cfg.device.type, dtype=torch.bfloat16, enabled=cfg.amp):
            loss: Tensor = self.net(x[:, :n], y[:, :n], x[:, n:], y[:, n:])
        return loss

    def one_step(self) -> None:
        cfg = self.cfg
        self.optimizer.zero_grad(set_to_none=True)
        total = torch.zeros((), dtype=torch.float64, device=cfg.device)
        for micro in range(cfg.accumulate):
            n = sample_num_train(cfg.seq_len, self.split_gen, cfg.min_train)
            self.num_train[self.step, micro] = n
            x, y = self._batch(cfg.seq_len)
            last = micro == cfg.accumulate - 1
            sync = contextlib.nullcontext() if last or self.world == 1 else self.net.no_sync()  # type: ignore[operator]
            with sync:
                loss = self._loss(x, y, n)
                (loss / cfg.accumulate).backward()
            total += loss.detach()
        if cfg.grad_clip is not None:
            torch.nn.utils.clip_grad_norm_(self.params, cfg.grad_clip)
        lr = learning_rate(self.step, cfg.lr, cfg.warmup, cfg.num_steps)
        for group in self.optimizer.param_groups:
            group["lr"] = lr
        with _defer_interrupt():
            self.optimizer.step()
            self.lrs[self.step] = lr
            self.loss_dev[self.step] = total / cfg.accumulate
            self.step += 1

    def run(self, progress: bool) -> TrainResult:
        cfg = self.cfg
        interrupted = False
        shown = self.step
        t_shown = time.perf_counter()

        def advance(phase: Phase, bar: tqdm) -> bool:
            nonlocal shown, t_shown
            before, step = self._rng_state(), self.step
            try:
                self.one_step()
            except KeyboardInterrupt:
                if self.step == step:  # the unfinished step is redone on resume
                    self._set_rng_state(before)
                raise
            if self.step % 10 == 0 or self.step == phase.end:
                now = time.perf_counter()
                rate = (self.step - shown) * cfg.batch_size * cfg.accumulate / max(now - t_shown, 1e-9)
                bar.set_postfix(loss=f"{float(self.loss_dev[self.step - 1]):.4f}",
                                datasets_s=f"{rate:.0f}", refresh=False)
                bar.update(self.step - phase.begin - bar.n)
                shown, t_shown = self.step, now
            if self.checkpoint and self.step % cfg.checkpoint_every == 0 and self.step < phase.end:
                self.save()
            return True

        def on_phase_end(phase: Phase, seconds: float) -> None:
            self.seconds += seconds
            self.phase_start = None

        start = self.step
        t0 = self.phase_start = time.perf_counter()
        try:
            run_phases([Phase("train", 0, cfg.num_steps, "pfn training")], lambda: self.step, advance,
                       on_phase_end, progress and self.rank == 0, mininterval=0.5)
        except KeyboardInterrupt:
            interrupted = True
        if not interrupted or self.world == 1:  # no collectives after an interrupt under DDP
            if self.checkpoint:
                self.save()
            else:
                self._sync_losses()
        else:
            self.losses[: self.step] = self.loss_dev[: self.step].double().cpu()
        if interrupted:
            warn_user(f"train_pfn interrupted at step {self.step} of {cfg.num_steps}: the model keeps the "
                      "steps done" + (f" (checkpoint saved to {self.checkpoint})"
                                      if self.checkpoint and self.world == 1 else ""))
        elapsed = time.perf_counter() - t0
        rate = (self.step - start) * cfg.batch_size * cfg.accumulate / max(elapsed, 1e-9)
        k = self.step
        return TrainResult(
            losses=self.losses[:k].clone(), lr=self.lrs[:k].clone(), num_train=self.num_train[:k].clone(),
            seconds=self.seconds, datasets_per_second=rate, steps_done=k, interrupted=interrupted,
            config=cfg, checkpoint=self.checkpoint,
        )


def train_pfn(
    pfn: nn.Module,
    prior: DatasetSampler,
    num_steps: int,
    *,
    batch_size: int = 64,
    seq_len: int = 100,
    min_train: int = 0,
    lr: float | None = None,
    warmup: int | None = None,
    weight_decay: float = 0.0,
    grad_clip: float | None = 1.0,
    accumulate: int = 1,
    device: torch.device | str | None = None,
    amp: bool | None = None,
    checkpoint: str | os.PathLike | None = None,
    checkpoint_every: int = 1000,
    resume: bool = False,
    progress: bool = True,
    seed: int | None = None,
    data_shards: int | None = None,
) -> TrainResult:
    """Fit ``pfn`` to the posterior predictive of ``prior`` by minimising the prior-data NLL.

    Each of ``num_steps`` optimiser steps draws ``accumulate`` batches of ``batch_size`` datasets
    of ``seq_len`` points, splits each batch at n ~ P(n) ∝ 1/(N − n) (:func:`sample_num_train`;
    one n per batch, as in the authors' code) and takes the loss −mean log q(y_test | x_test, D_train)
    of ``pfn(x[:, :n], y[:, :n], x[:, n:]).log_prob(y[:, n:])``; gradients clipped to norm
    ``grad_clip``, AdamW with linear warm-up over ``warmup`` steps and cosine decay to 0.

    Distributed: when a default process group is initialised (``torchrun``), the model is wrapped
    in DDP, rank r draws its ``batch_size / world_size`` datasets from its own stream seeded
    :func:`shard_seed` (seed, r) (the split n is common to all ranks), gradients are averaged,
    and only rank 0 writes the checkpoint and shows the bar. A single process with
    ``data_shards=W`` draws the same global batch as W ranks, so it reproduces their run.

    Args:
        pfn: an ``nn.Module`` called as ``pfn(x_train (B, n, d), y_train (B, n), x_test (B, m, d))``
            returning a distribution with ``log_prob(y_test (B, m)) -> (B, m)``; trained in place.
        prior: a dataset prior, ``prior.sample_batch(batch_size, num_points, generator) -> (x, y)``.
        num_steps: total optimiser steps (a resumed run continues up to it).
        batch_size: datasets per (micro-)batch, over all ranks.
        seq_len: points per dataset N = n + m.
        min_train: smallest training-set size n drawn (0 as in the paper).
        lr: peak learning rate (default: the authors' heuristic 0.003239 − 0.0001395·log(#params),
            clamped to [1e-5, 1e-3]).
        warmup: linear warm-up steps (default: num_steps // 4, as in the authors' notebooks).
        weight_decay: AdamW's decoupled weight decay (0: Adam).
        grad_clip: max gradient norm, or None.
        accumulate: batches per optimiser step (gradient accumulation).
        device: where to train (default: where the model's parameters are); the model is moved.
        amp: bf16 autocast (default: on for CUDA and a float32 model, off otherwise).
        checkpoint: file written every ``checkpoint_every`` steps, at the end and on Ctrl-C.
        checkpoint_every: steps between checkpoints.
        resume: continue from ``checkpoint`` when that file exists (the same options are required,
            except ``num_steps``, which may grow; ``lr``, ``warmup`` and ``seed`` left at None
            take the stored values); on CPU the result equals an uninterrupted run.
            :func:`bayesact.infer.resume` ``(path, pfn, prior)`` does the same with the stored options.
        progress: a tqdm bar with the loss and datasets/s (on a terminal; rank 0 only).
        seed: seed of the data and split streams (default: drawn from torch's global stream;
            broadcast from rank 0 under DDP).
        data_shards: independent data streams the batch is drawn from (default: the world size).

    Returns:
        A :class:`TrainResult` (losses, learning rates, n per batch, timings).
    """
    if not isinstance(pfn, nn.Module):
        raise TypeError(f"'pfn' must be a torch nn.Module, got {type(pfn).__name__}")
    if not isinstance(prior, DatasetSampler):
        raise TypeError(f"'prior' must have sample_batch(batch_size, num_points, generator), got "
                        f"{type(prior).__name__}")
    rank, world = _distributed()
    num_steps = _int("num_steps", num_steps, 1)
    seq_len = _int("seq_len", seq_len, 2)
    min_train = _int("min_train", min_train, 0)
    if min_train >= seq_len:
        raise ValueError(f"'min_train' must be < seq_len={seq_len} (one query point at least), "
                         f"got {min_train}")
    accumulate = _int("accumulate", accumulate, 1)
    checkpoint_every = _int("checkpoint_every", checkpoint_every, 1)
    shards = world if data_shards is None else _int("data_shards", data_shards, 1)
    if world > 1 and shards != world:
        raise ValueError(f"'data_shards' must equal the world size {world} under torch.distributed, "
                         f"got {shards}")
    batch_size = _int("batch_size", batch_size, 1)
    if batch_size % shards:
        raise ValueError(f"'batch_size' ({batch_size}) must be divisible by the number of data streams "
                         f"(world size or data_shards = {shards})")
    weight_decay = _positive("weight_decay", weight_decay, allow_zero=True)
    if grad_clip is not None:
        grad_clip = _positive("grad_clip", grad_clip)
    defaults = {name for name, value in (("warmup", warmup), ("lr", lr)) if value is None}
    if warmup is None:
        warmup = num_steps // 4
    warmup = _int("warmup", warmup, 0)
    seed = explicit_seed = check_seed(seed)
    if resume not in (True, False):
        raise ValueError(f"'resume' must be a bool, got {resume!r}")
    path = check_checkpoint_path(checkpoint)
    if resume and path is None:
        raise ValueError("'resume=True' needs a 'checkpoint' path")
    if device is None:
        params = list(pfn.parameters())
        dev = params[0].device if params else torch.device("cpu")
    else:
        dev = resolve_device(device)
    if world > 1 and dev.type == "cuda" and dev.index is None:
        dev = torch.device("cuda", torch.cuda.current_device())
    pfn.to(dev)
    dtype = _model_dtype(pfn)
    if amp is None:
        amp = dev.type == "cuda" and dtype == torch.float32
    elif amp not in (True, False):
        raise ValueError(f"'amp' must be None or a bool, got {amp!r}")
    if lr is None:
        lr = default_lr(sum(p.numel() for p in pfn.parameters() if p.requires_grad))
    lr = _positive("lr", lr)
    if seed is None:
        seed = int(torch.randint(0, 2**62, ()))
    if world > 1:
        box: list[Any] = [seed]
        torch.distributed.broadcast_object_list(box, src=0)
        seed = int(box[0])
    cfg = TrainConfig(
        num_steps=num_steps, batch_size=batch_size, seq_len=seq_len, min_train=min_train, lr=lr,
        warmup=warmup, weight_decay=weight_decay, grad_clip=grad_clip, accumulate=accumulate,
        amp=bool(amp), seed=seed, data_shards=shards, checkpoint_every=checkpoint_every, device=dev,
        dtype=dtype,
    )
    payload = load_checkpoint(path, PFN_FORMAT) if resume and path and os.path.exists(path) else None
    if payload is not None:
        for name in defaults | {"seed"}:  # options left to their defaults continue the stored ones
            setattr(cfg, name, payload["config"][name])
        _check_same_config(payload, cfg, path or "", explicit_seed)
    run = _Run(pfn, prior, cfg, path, rank, world)
    if payload is not None:
        run.load(payload, path or "")
    return run.run(progress)


_MAY_DIFFER = ("num_steps", "checkpoint_every", "device", "seed")


def _check_same_config(payload: dict[str, Any], cfg: TrainConfig, path: str, seed: int | None) -> None:
    stored = from_plain(TrainConfig, payload["config"])
    if seed is not None and seed != stored.seed:
        raise ValueError(f"'seed'={seed} differs from the seed {stored.seed} of the run checkpointed in "
                         f"{path!r} (pass seed=None to continue it)")
    problems = [
        f"{name}={getattr(cfg, name)!r} here but {getattr(stored, name)!r} in the checkpoint"
        for name in TrainConfig.__dataclass_fields__ if name not in _MAY_DIFFER
        and getattr(cfg, name) != getattr(stored, name)
    ]
    if int(payload["state"]["step"]) > cfg.num_steps:
        done = payload["state"]["step"]
        problems.append(f"num_steps={cfg.num_steps} is below the {done} steps already done")
    if problems:
        raise ValueError(f"the run differs from the one checkpointed in {path!r}: " + "; ".join(problems))


def _resume_pfn(payload: dict[str, Any], path: str, model: Any, args: tuple, kwargs: dict,
                progress: bool) -> TrainResult:
    """:func:`bayesact.infer.resume` for PFN checkpoints: ``resume(path, pfn, prior)``."""
    if len(args) != 1 or kwargs:
        raise ValueError(f"resume a PFN run as resume({path!r}, pfn, prior)")
    c = from_plain(TrainConfig, payload["config"])
    return train_pfn(
        model, args[0], c.num_steps, batch_size=c.batch_size, seq_len=c.seq_len, min_train=c.min_train,
        lr=c.lr, warmup=c.warmup, weight_decay=c.weight_decay, grad_clip=c.grad_clip, accumulate=c.accumulate,
        device=c.device, amp=c.amp, checkpoint=path, checkpoint_every=c.checkpoint_every, resume=True,
        progress=progress, seed=c.seed, data_shards=c.data_shards,
    )


register_format(PFN_FORMAT, _resume_pfn)
