"""The peer of ``benchmarks/pfn.py --train``: trains a PFN with the ``pfns`` 0.4.2 package (automl/PFNs).

Runs in a separate interpreter that has ``pfns`` installed (``--pfns-python``; it must not share
bayesact's virtualenv) and imports nothing from bayesact. It gets the run's settings on the
command line and a torch file (plain tensors, read with ``weights_only=True``) holding the bar
borders and a held-out evaluation set; it prints one JSON line: training-loop seconds (from the
first batch on) and the whole call's, datasets/s, the training loss of the last steps, and the
mean NLL per query point on the held-out datasets.

The GP prior is written here for pfns' ``get_batch`` interface to match bayesact's
``GPDatasetPrior``: x ~ U[0, 1]^d, RBF kernel exp(−|x − x'|²/2ℓ²) with outputscale 1, noise std σ,
y = L z with L the float64 Cholesky factor of K + σ²I, batch-first float32 tensors.
"""

from __future__ import annotations

import argparse
import json
import math
import time

import torch
from pfns.batch_shape_sampler import BatchShapeSamplerConfig
from pfns.model.criterions import BarDistributionConfig
from pfns.model.transformer_config import TransformerConfig
from pfns.optimizer import OptimizerConfig
from pfns.priors.prior import AdhocPriorConfig, Batch
from pfns.train import MainConfig, train

FIRST_BATCH: list[float] = []  # perf_counter() when training asked for its first batch


def gp_get_batch(lengthscale: float, noise: float):  # pfns' callable prior
    def get_batch(batch_size: int, seq_len: int, num_features: int, single_eval_pos: int | None = None,
                  **_: object) -> Batch:
        if not FIRST_BATCH:
            FIRST_BATCH.append(time.perf_counter())
        x = torch.rand(batch_size, seq_len, num_features, dtype=torch.float64)
        sq = torch.cdist(x, x).square()
        cov = torch.exp(-0.5 * sq / lengthscale**2) + noise**2 * torch.eye(seq_len, dtype=torch.float64)
        y = (torch.linalg.cholesky(cov) @ torch.randn(batch_size, seq_len, 1, dtype=torch.float64))[..., 0]
        return Batch(x=x.float(), y=y.float(), target_y=y.float(), single_eval_pos=single_eval_pos)

    return get_batch


def main() -> None:
    p = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    for name in ("features", "emsize", "nlayers", "nhead", "nhid", "batch", "seq-len", "steps", "warmup",
                 "threads", "seed", "steps-per-epoch"):
        p.add_argument(f"--{name}", type=int, required=True)
    for name in ("lengthscale", "noise", "lr"):
        p.add_argument(f"--{name}", type=float, required=True)
    p.add_argument("--data", required=True, help="torch file: borders, eval_x, eval_y, eval_n")
    a = p.parse_args()
    torch.set_num_threads(a.threads)
    torch.manual_seed(a.seed)
    data = torch.load(a.data, weights_only=True)
    if a.steps % a.steps_per_epoch:
        raise ValueError("--steps must be a multiple of --steps-per-epoch")
    config = MainConfig(
        priors=[AdhocPriorConfig(get_batch_methods=gp_get_batch(a.lengthscale, a.noise), prior_kwargs={})],
        optimizer=OptimizerConfig("adam", lr=a.lr),
        model=TransformerConfig(
            criterion=BarDistributionConfig(borders=data["borders"].tolist(), full_support=True),
            emsize=a.emsize, nhid=a.nhid, nlayers=a.nlayers, nhead=a.nhead,
            features_per_group=a.features, attention_between_features=False,
        ),
        batch_shape_sampler=BatchShapeSamplerConfig(
            batch_size=a.batch, max_seq_len=a.seq_len, min_num_features=a.features,
            max_num_features=a.features, seed=a.seed,
        ),
        epochs=a.steps // a.steps_per_epoch, steps_per_epoch=a.steps_per_epoch,
        warmup_epochs=max(1, a.warmup // a.steps_per_epoch), train_mixed_precision=False, verbose=False,
        num_workers=0,  # data drawn in the training process, as bayesact's train_pfn does
    )
    start = time.perf_counter()
    out = train(config, device="cpu", reusable_config=False)
    end = time.perf_counter()
    seconds = end - FIRST_BATCH[0]  # the training loop, from the first batch on (setup excluded)
    model = out["model"].eval()
    criterion = model.criterion
    nll, count = 0.0, 0
    with torch.no_grad():
        for n in data["eval_n"].tolist():
            x, y = data["eval_x"], data["eval_y"]
            logits = model(x=x, y=y[:, :n], only_return_standard_out=True)
            logits = logits[:, -(x.shape[1] - n):] if logits.shape[1] != x.shape[1] - n else logits
            loss = criterion(logits, y[:, n:])
            nll += float(loss.sum())
            count += loss.numel()
    print("PFNS_RESULT " + json.dumps({
        "seconds": seconds, "call_seconds": end - start, "datasets_per_second": a.steps * a.batch / seconds,
        "final_loss": float(out["total_loss"]), "eval_nll": nll / count if count else math.nan,
    }), flush=True)


if __name__ == "__main__":
    main()
