"""Smoke test of the process benchmark: ``benchmarks/processes.py --quick`` runs and prints its table."""

from __future__ import annotations

import subprocess
import sys
from pathlib import Path

import pytest
import torch

SCRIPT = Path(__file__).resolve().parents[1] / "benchmarks" / "processes.py"


def test_processes_benchmark_quick_prints_table() -> None:
    proc = subprocess.run(
        [sys.executable, str(SCRIPT), "--quick"], capture_output=True, text=True, timeout=60
    )
    assert proc.returncode == 0, proc.stderr[-2000:]
    lines = proc.stdout.splitlines()
    header = next(i for i, line in enumerate(lines) if line.startswith("| n | dtype |"))
    assert lines[header + 1].startswith("|---:")
    cells = [c.strip() for c in lines[header + 2].strip("|").split("|")]
    assert cells[:2] == ["100", "float64"]
    assert len(cells) == len(lines[header].strip("|").split("|"))
    assert all(float(c) > 0 for c in cells[2:7])  # the timed columns
    assert "relative difference" in proc.stdout  # GP and GPyTorch log p(y) were compared


@pytest.mark.skipif(torch.cuda.is_available(), reason="runs the GPU table when CUDA is available")
def test_processes_benchmark_cuda_skipped_cleanly_without_gpu() -> None:
    proc = subprocess.run(
        [sys.executable, str(SCRIPT), "--device", "cuda"], capture_output=True, text=True, timeout=60
    )
    assert proc.returncode == 0, proc.stderr[-2000:]
    assert "skipped" in proc.stdout


GPU_SUITE = SCRIPT.parent / "gpu_suite.py"


def test_gpu_suite_dry_run_runs_every_step(tmp_path: Path) -> None:
    """``benchmarks/gpu_suite.py --dry-run`` runs each step on the CPU (tiny sizes) and reports it ok."""
    out = tmp_path / "gpu.md"
    proc = subprocess.run(
        [sys.executable, str(GPU_SUITE), "--dry-run", "--out", str(out)], capture_output=True, text=True,
        timeout=600,
    )
    assert proc.returncode == 0, proc.stdout[-3000:] + proc.stderr[-2000:]
    text = out.read_text()
    rows = [line for line in text.splitlines() if line.startswith("| ") and line.count("|") == 4]
    names = [row.split("|")[1].strip() for row in rows[1:]]
    assert names == ["gpu tests", "mcmc chains", "kernels", "activations", "processes", "pfn training"]
    assert all(row.split("|")[2].strip() == "ok" for row in rows[1:]), rows
    assert "| 2 | 3 + 3 |" in text  # the vectorised-chains table has its 2-chain row
    assert "| 32, 1 | 2 | 4 | 20 |" in text  # the PFN training row (2 steps of a tiny PFN)


PFN_SCRIPT = SCRIPT.parent / "pfn.py"


def test_pfn_benchmark_quick_prints_table_and_crossover() -> None:
    """``benchmarks/pfn.py --quick``: a row with positive times and the crossover line."""
    proc = subprocess.run(
        [sys.executable, str(PFN_SCRIPT), "--quick"], capture_output=True, text=True, timeout=120
    )
    assert proc.returncode == 0, proc.stderr[-2000:]
    lines = proc.stdout.splitlines()
    header = next(i for i, line in enumerate(lines) if line.startswith("| n | PFN forward"))
    cells = [c.strip() for c in lines[header + 2].strip("|").split("|")]
    assert cells[0] == "50" and len(cells) == 6
    assert all(float(c) > 0 for c in cells[1:])
    assert any(line.startswith("Crossover") for line in lines)


FIRST_RESULT = SCRIPT.parent / "first_result.py"


def test_first_result_benchmark_quick_prints_its_tables() -> None:
    """``benchmarks/first_result.py --quick``: bayesact, Pyro and kernel rows with positive times."""
    proc = subprocess.run(
        [sys.executable, str(FIRST_RESULT), "--quick", "--threads", "1"], capture_output=True, text=True,
        timeout=600,
    )
    assert proc.returncode == 0, proc.stderr[-2000:]
    report = proc.stdout[proc.stdout.index("# Time to first result"):]  # progress lines come before it
    rows = [[c.strip() for c in line.strip("|").split("|")] for line in report.splitlines()
            if line.startswith("| ") and not line.startswith("| engine") and not line.startswith("| kernel")]
    small = {(r[0], r[1]): r for r in rows if len(r) == 5}
    for key in [("bayesact mcmc (defaults)", "1"), ("bayesact mcmc (defaults)", "4"),
                ("Pyro NUTS (jit_compile=False)", "1"), ("Pyro NUTS (jit_compile=True)", "1")]:
        assert float(small[key][2]) > 0, key
    diabetes = [r for r in rows if len(r) == 7 and r[0] == "bayesact mcmc (defaults)"]
    assert [r[1] for r in diabetes] == ["cold (new process)", "warm (new process)"]
    assert all(float(r[3]) > 0 for r in diabetes)
    kernels = [r for r in rows if len(r) == 13 and r[0] in ("nngp", "ntk")]  # first calls, steady state
    assert len(kernels) == 8 and all(float(r[i]) > 0 for r in kernels for i in (3, 4, 7))


OVERHEAD = SCRIPT.parent / "overhead.py"


def test_overhead_benchmark_quick_prints_its_table() -> None:
    """``benchmarks/overhead.py --quick``: four rows (two models, 1 and 4 chains) with positive times."""
    proc = subprocess.run([sys.executable, str(OVERHEAD), "--quick"], capture_output=True, text=True,
                          timeout=300)
    assert proc.returncode == 0, proc.stderr[-2000:]
    rows = [[c.strip() for c in line.strip("|").split("|")] for line in proc.stdout.splitlines()
            if line.startswith("| ") and not line.startswith("| model")]
    assert [r[1] for r in rows] == ["1", "4", "1", "4"]
    assert all(float(c) > 0 for r in rows for c in r[2:])


KERNEL_FIRST_CALL = SCRIPT.parent / "kernel_first_call.py"


def test_kernel_first_call_diagnostic_prints_its_table() -> None:
    """``benchmarks/kernel_first_call.py`` at a tiny size: one row with faults, CPU time and the
    allocation counts of a fresh process's first ``ntk`` call."""
    proc = subprocess.run([sys.executable, str(KERNEL_FIRST_CALL), "--sizes", "64", "--kernels", "ntk",
                           "--activations", "erf"], capture_output=True, text=True, timeout=120)
    assert proc.returncode == 0, proc.stderr[-2000:]
    rows = [[c.strip() for c in line.strip("|").split("|")] for line in proc.stdout.splitlines()
            if line.startswith("| ntk")]
    assert rows and rows[-1][:3] == ["ntk", "erf", "64"]
    assert int(rows[-1][3]) >= 0 and float(rows[-1][4]) > 0 and int(rows[-1][8]) >= 1
