"""Run the fast test suite and record the result in ``docs/compat.md`` (``make test-compat``).

Runs ``pytest -m "not slow and not gpu"`` with this interpreter, then rewrites the page's
"Latest run" section (date, Python, torch, ArviZ, NumPy, Pyro versions, counts, every failing
test with the first line of its error) and adds a row to its history table. Exits with
pytest's status, after writing the page.

    python tools/compat_report.py [--page docs/compat.md] [-- extra pytest arguments]
"""

from __future__ import annotations

import argparse
import importlib.metadata
import platform
import subprocess
import sys
import tempfile
import time
import xml.etree.ElementTree as ET
from pathlib import Path

ROOT = Path(__file__).resolve().parent.parent
HISTORY_HEADER = "| date | Python | torch | ArviZ | passed | failed | errors | skipped | minutes |"
INTRO = """# Compatibility: the newest supported stack

`make test` (the CI entry) runs in `.venv`: Python 3.11 or 3.12 with the CPU build of torch it
finds (2.13 from the local wheel where there is one). `make test-compat` checks the other end of
what the README promises, in its own `.venv-compat`: **Python 3.12, the newest torch pip allows,
ArviZ 1.x**, running `pytest -m "not slow and not gpu"` on the working tree as it is (each run
names the commit and whether there were uncommitted changes). Each run rewrites "Latest run"
below and adds a row to the history (script: `tools/compat_report.py`). Set `COMPAT_PYTHON` to
choose the interpreter (default: pyenv's 3.12, else `python3.12` on the PATH). "Newest torch" is
the newest that pip's configuration allows: where a pip constraints file caps torch, that cap.

## torch 2.14: `make_fx` drops `detach`

From torch 2.14, `make_fx` no longer records `aten.detach` in the graphs it traces (2.13 did): a
traced function that reads `parameter.detach()` gives a graph that reads the parameter itself, and
whose outputs require grad when the graph runs again with autograd on. Minimal reproduction:

```python
import torch
from torch.fx.experimental.proxy_tensor import make_fx

p = torch.nn.Parameter(torch.tensor(2.0))
g = make_fx(lambda x: x * p.detach())(torch.ones(3))
print(g(torch.ones(3)).requires_grad)  # 2.13: False; 2.14.1: True
```

bayesact captures the NUTS gradient with `make_fx`, and the BNN priors read their (trainable)
stds with `.detach()`; on torch 2.14 the captured gradient came back with autograd history, the
sampler fed it into its state, and one autograd graph grew over the whole run: `make demo` went
from 1 GB to 10–24 GB and was killed. bayesact now makes every constant tensor of its captured
and compiled graphs a detached view (`bayesact.infer.compiled.detach_constants`) and evaluates
the eager `vmap` gradient under `torch.no_grad()` (`torch.func.grad` ignores it), so no torch
version needs a pin: measured peaks of `make demo` are in `benchmarks/results/demo_memory.md`.
Test: `tests/infer/test_memory.py`.

## Latest run
"""


def _version(dist: str) -> str:
    try:
        return importlib.metadata.version(dist)
    except importlib.metadata.PackageNotFoundError:
        return "not installed"


def _summary(junit: Path) -> tuple[dict[str, int], list[str]]:
    counts = {"tests": 0, "failures": 0, "errors": 0, "skipped": 0}
    failing: list[str] = []
    if not junit.exists():
        return counts, failing
    for suite in ET.parse(junit).getroot().iter("testsuite"):
        for key in counts:
            counts[key] += int(suite.get(key, 0))
    for case in ET.parse(junit).getroot().iter("testcase"):
        for tag in ("failure", "error"):
            bad = case.find(tag)
            if bad is not None:
                path = case.get("classname", "").replace(".", "/")
                message = (bad.get("message") or bad.text or "").strip().splitlines()
                first = message[0][:300] if message else ""
                failing.append(f"- `{path}.py::{case.get('name')}` ({tag}): `{first}`")
    return counts, failing


def _tree() -> str:
    """The commit tested and whether the working tree had uncommitted changes (it is tested as is)."""
    try:
        head = subprocess.run(["git", "rev-parse", "--short", "HEAD"], cwd=ROOT, capture_output=True,
                              text=True, check=True).stdout.strip()
        dirty = subprocess.run(["git", "status", "--porcelain", "--untracked-files=normal"], cwd=ROOT,
                               capture_output=True, text=True, check=True).stdout.strip()
    except (OSError, subprocess.CalledProcessError):
        return "outside git"
    return f"`{head}`" + (" with uncommitted changes" if dirty else "")


def _history(page: Path) -> list[str]:
    if not page.exists():
        return []
    return [line for line in page.read_text().splitlines() if line.startswith("| 20")]


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--page", default=str(ROOT / "docs" / "compat.md"))
    parser.add_argument("pytest_args", nargs="*")
    args = parser.parse_args()
    page = Path(args.page)
    tree = _tree()
    start = time.time()
    with tempfile.TemporaryDirectory() as tmp:
        junit = Path(tmp) / "junit.xml"
        cmd = [sys.executable, "-m", "pytest", "-m", "not slow and not gpu", "-q", "-p", "no:cacheprovider",
               f"--junitxml={junit}", *args.pytest_args]
        status = subprocess.call(cmd, cwd=ROOT)
        counts, failing = _summary(junit)
    minutes = (time.time() - start) / 60
    bad = counts["failures"] + counts["errors"]
    passed = counts["tests"] - bad - counts["skipped"]
    versions = {name: _version(name) for name in ("torch", "arviz", "numpy", "pyro-ppl", "gpytorch")}
    py = platform.python_version()
    date = time.strftime("%Y-%m-%d %H:%M UTC", time.gmtime())
    row = (f"| {date} | {py} | {versions['torch']} | {versions['arviz']} | {passed} | {counts['failures']} "
           f"| {counts['errors']} | {counts['skipped']} | {minutes:.0f} |")
    lines = [INTRO, f"{date}, commit {tree}, `pytest -m \"not slow and not gpu\"` (exit status {status}): "
             f"**{passed} passed, {counts['failures']} failed, {counts['errors']} errors, "
             f"{counts['skipped']} skipped** in {minutes:.0f} min.", "",
             "Python " + py + ", " + ", ".join(f"{k} {v}" for k, v in versions.items()) + ".", ""]
    if failing:
        lines += ["Failing tests (first line of the error):", "", *failing, ""]
    lines += ["## History", "", HISTORY_HEADER, "|---|---|---|---|---:|---:|---:|---:|---:|", row,
              *_history(page), ""]
    page.write_text("\n".join(lines))
    print(f"wrote {page}: {row}")
    sys.exit(status)


if __name__ == "__main__":
    main()
