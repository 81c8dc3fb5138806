"""Smoke tests of the PFN speed measurements: ``examples/pfn_bnn_prior.py --quick`` (PFN vs NUTS vs SVI
on the BNN prior), ``benchmarks/pfn.py --train --quick`` (training throughput vs pfns 0.4.2) and
``benchmarks/pfn.py --bnn --quick``; plus the closed form of the Monte Carlo PPD NLL the example uses."""

from __future__ import annotations

import math
import os
import subprocess
import sys
from pathlib import Path

import pytest
import torch

ROOT = Path(__file__).resolve().parents[1]
EXAMPLE = ROOT / "examples" / "pfn_bnn_prior.py"
BENCH = ROOT / "benchmarks" / "pfn.py"


def _rows(stdout: str, header_start: str) -> list[list[str]]:
    lines = stdout.splitlines()
    header = next(i for i, line in enumerate(lines) if line.startswith(header_start))
    rows = []
    for line in lines[header + 2:]:
        if not line.startswith("| "):
            break
        rows.append([c.strip() for c in line.strip("|").split("|")])
    return rows


def _check_bnn_table(stdout: str) -> None:
    rows = _rows(stdout, "| method | datasets |")
    assert [r[0].split(" ")[0] for r in rows] == ["PFN", "SVI", "NUTS"]
    for r in rows:
        assert float(r[2]) > 0  # seconds per dataset
        assert math.isfinite(float(r[3].split(" ")[0])) and math.isfinite(float(r[4].split(" ")[0]))
    assert float(rows[0][5]) == 1.0  # the PFN's time relative to itself
    assert "Load average at start" in stdout


def test_example_quick_prints_pfn_svi_nuts_table(tmp_path: Path) -> None:
    out = tmp_path / "table.md"
    proc = subprocess.run([sys.executable, str(EXAMPLE), "--quick", "--out", str(out)], capture_output=True,
                          text=True, timeout=300)
    assert proc.returncode == 0, proc.stderr[-2000:]
    _check_bnn_table(proc.stdout)
    assert out.read_text().strip() in proc.stdout


@pytest.mark.slow
def test_benchmark_bnn_mode_runs_the_example() -> None:
    proc = subprocess.run([sys.executable, str(BENCH), "--quick", "--bnn"], capture_output=True, text=True,
                          timeout=300)
    assert proc.returncode == 0, proc.stderr[-2000:]
    _check_bnn_table(proc.stdout)


def test_mc_ppd_nll_matches_closed_forms() -> None:
    sys.path.insert(0, str(EXAMPLE.parent))
    try:
        import pfn_bnn_prior as ex
    finally:
        sys.path.remove(str(EXAMPLE.parent))
    y = torch.tensor([0.3, -1.0, 2.0])
    f = torch.tensor([0.1, -0.8, 1.5])
    # every draw the same function: the exact Gaussian NLL
    expected = float(-torch.distributions.Normal(f.double(), ex.NOISE).log_prob(y.double()).mean())
    assert ex.mc_ppd_nll(f.expand(4, 7, 3), y) == pytest.approx(expected, rel=1e-12)
    # two draws: -log of the mean of the two densities (a mixture, not a mean of log densities)
    f2 = torch.stack([f, f + 0.2])
    dens = torch.distributions.Normal(f2.double(), ex.NOISE).log_prob(y.double()).exp().mean(0)
    assert ex.mc_ppd_nll(f2, y) == pytest.approx(float(-dens.log().mean()), rel=1e-10)


def test_benchmark_train_quick_without_peer_reports_why() -> None:
    env = {k: v for k, v in os.environ.items() if k != "BAYESACT_PFNS_PYTHON"}
    proc = subprocess.run([sys.executable, str(BENCH), "--train", "--quick"], capture_output=True, text=True,
                          timeout=300, env=env)
    assert proc.returncode == 0, proc.stderr[-2000:]
    rows = _rows(proc.stdout, "| trainer | datasets/s")
    assert [r[0] for r in rows] == ["bayesact train_pfn"]
    assert float(rows[0][1]) > 0 and math.isfinite(float(rows[0][5]))
    assert "pfns not run" in proc.stdout


@pytest.mark.skipif(not os.environ.get("BAYESACT_PFNS_PYTHON"),
                    reason="needs BAYESACT_PFNS_PYTHON: an interpreter with pfns==0.4.2 installed")
def test_benchmark_train_quick_against_pfns() -> None:
    proc = subprocess.run([sys.executable, str(BENCH), "--train", "--quick"], capture_output=True, text=True,
                          timeout=600)
    assert proc.returncode == 0, proc.stderr[-2000:]
    rows = _rows(proc.stdout, "| trainer | datasets/s")
    assert [r[0] for r in rows] == ["bayesact train_pfn", "pfns 0.4.2"]
    assert all(float(r[1]) > 0 and math.isfinite(float(r[5])) for r in rows)
    assert "Throughput ratio bayesact / pfns" in proc.stdout
