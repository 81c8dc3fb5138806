"""GP mimicry (Müller et al. 2022, Fig. 4a; issue 14): a small PFN trained on the 1-D fixed-hyperparameter
RBF GP prior of ``benchmarks/pfn_mimicry.py``, compared with the exact GP predictive (float64 Cholesky)."""

from __future__ import annotations

from pathlib import Path
from types import ModuleType

import pytest
import torch

from ..._scripts import load_script


def load_benchmark() -> ModuleType:
    return load_script("benchmarks/pfn_mimicry.py")


@pytest.mark.slow
def test_small_pfn_mimics_the_1d_gp(tmp_path: Path) -> None:
    """Prior: x ~ U[0, 1], RBF ℓ = 0.6, outputscale 1, noise std 0.01 (paper §5.1). PFN emsize 64, 2 layers,
    200 buckets, 500 steps × 32 datasets of 30 points (16,000 datasets; ~90 s on a loaded CPU core);
    400 fresh datasets per n, 5 queries each.

    Measured (seed 0): NLL gap to the exact GP 1.91 ± 0.03 nats at n = 5 and 2.44 ± 0.02 at n = 20
    (GP −2.32 and −3.05: with σ = 0.01 the GP predictive is very sharp; PFN −0.41 and −0.60, prior
    predictive 1.44); PFN 95 % coverage 0.969 and 1.000 (too wide, never too narrow). So this size is
    far from the issue's 0.05 nats (see benchmarks/results/pfn_mimicry.md); the test asserts what it
    meets with about 0.4 nats of margin. n = 0 is not asserted: P(n) ∝ 1/(N − n) trains it on 1 batch
    in ~120 and the 1-D PFN's n = 0 output is then untrained (measured gap 3.1, coverage 0.31)."""
    bench = load_benchmark()
    args = bench.parse([
        "--dims", "1", "--steps", "500", "--batch-size", "32", "--seq-len", "30", "--emsize", "64",
        "--nlayers", "2", "--buckets", "200", "--checkpoints", "--ns", "5", "20", "--datasets", "400",
        "--queries", "5", "--out", str(tmp_path), "--model-dir", str(tmp_path),
    ])
    torch.set_num_threads(1)
    result = bench.run_dimension(1, args, torch.device("cpu"))
    final = result["final"]
    print({n: {k: round(v, 3) for k, v in row.items()} for n, row in final.items()})
    for n, row in final.items():
        # the exact GP is Bayes-optimal: the PFN may not beat it beyond noise
        assert row["gap"] > -3 * row["gap_se"], (n, row)
        # the reference's own coverage is nominal (binomial: 2000 draws, s.e. 0.005)
        assert abs(row["gp_cover"] - 0.95) < 0.02, (n, row)
    # a bound this size meets (measured 1.91 and 2.44), far above the 0.05 nats
    assert final["5"]["gap"] < 2.3
    assert final["20"]["gap"] < 2.8
    for n in ("5", "20"):
        # it learned from the data: far below the prior predictive N(0, 1 + 1e-4) (NLL 1.419)
        assert final[n]["pfn_nll"] < 1.419 - 1.5, (n, final[n])
        # stated band: intervals not too narrow (coverage >= 0.93; measured 0.969 and 1.000)
        assert 0.93 <= final[n]["pfn_cover"] <= 1.0, (n, final[n])
