"""Peak memory and wall time of the main demo (``make demo``), in a watched subprocess.

Runs ``examples/functional_prior_bnn.py`` with the given Python (a venv with another torch, say)
and polls the resident set size of its whole process tree (Inductor's compile workers included)
every 0.2 s. The run is killed when the tree passes ``--limit-mb`` (default 3000), so a
regression never reaches the OOM killer; the row then says "killed". Prints one Markdown row
(torch and Python versions of the child, peak RSS in MB, wall time in s, load average at the
start, outcome with the demo's test RMSE/NLL) and appends it to ``--output`` when given.

    python benchmarks/demo_memory.py [--python .venv/bin/python] [--limit-mb 3000]
        [--output benchmarks/results/demo_memory.md] [-- extra demo arguments, e.g. --quick]
"""

from __future__ import annotations

import argparse
import os
import signal
import subprocess
import sys
import tempfile
import time
from pathlib import Path

ROOT = Path(__file__).resolve().parent.parent
DEMO = ROOT / "examples" / "functional_prior_bnn.py"


def tree_rss_mb(root: int) -> float:
    """Resident set size of ``root`` and all its descendants, in MB (Linux ``/proc``)."""
    children: dict[int, list[int]] = {}
    for entry in os.listdir("/proc"):
        if not entry.isdigit():
            continue
        try:
            with open(f"/proc/{entry}/stat") as f:
                ppid = int(f.read().rsplit(")", 1)[1].split()[1])
        except (OSError, IndexError, ValueError):  # the process ended meanwhile
            continue
        children.setdefault(ppid, []).append(int(entry))
    total_kb, stack = 0, [root]
    while stack:
        pid = stack.pop()
        stack.extend(children.get(pid, []))
        try:
            with open(f"/proc/{pid}/status") as f:
                total_kb += next((int(line.split()[1]) for line in f if line.startswith("VmRSS:")), 0)
        except OSError:
            continue
    return total_kb / 1024


def child_versions(python: str) -> str:
    code = "import sys, torch; print(f'torch {torch.__version__}, Python {sys.version.split()[0]}')"
    return subprocess.run([python, "-c", code], capture_output=True, text=True, check=True).stdout.strip()


def run(python: str, limit_mb: float, demo_args: list[str], warm_cache: bool = False) -> dict[str, object]:
    """Run the demo; return peak RSS (MB), wall seconds, exit status and whether it was killed.

    Unless ``warm_cache``, TorchInductor gets an empty cache directory: the compile (and its
    memory) of a first ``make demo`` on a fresh machine is measured, not a cache hit.
    """
    with tempfile.TemporaryDirectory() as tmp:
        cmd = [python, str(DEMO), "--out", str(Path(tmp) / "demo.png"), *demo_args]
        env = {**os.environ, "MPLBACKEND": "Agg"}
        if not warm_cache:
            env["TORCHINDUCTOR_CACHE_DIR"] = str(Path(tmp) / "inductor")
        log_path = Path(tmp) / "demo.log"
        start = time.perf_counter()
        with open(log_path, "w") as log:
            proc = subprocess.Popen(cmd, cwd=ROOT, env=env, start_new_session=True, stdout=log,
                                    stderr=subprocess.STDOUT)
            peak, killed = 0.0, False
            while proc.poll() is None:
                peak = max(peak, tree_rss_mb(proc.pid))
                if peak > limit_mb:
                    os.killpg(proc.pid, signal.SIGKILL)
                    killed = True
                    break
                time.sleep(0.2)
            proc.wait()
        wall = time.perf_counter() - start
        return {"peak_mb": peak, "wall_s": wall, "returncode": proc.returncode, "killed": killed,
                "log": log_path.read_text()}


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--python", default=sys.executable, help="interpreter to run the demo with")
    parser.add_argument("--limit-mb", type=float, default=3000.0, help="kill the demo above this RSS")
    parser.add_argument("--output", help="Markdown file to append the result row to")
    parser.add_argument("--warm-cache", action="store_true", help="keep TorchInductor's own cache")
    parser.add_argument("demo_args", nargs="*", help="arguments passed on to the demo (after --)")
    args = parser.parse_args()
    versions = child_versions(args.python)
    load = os.getloadavg()[0]
    print(f"{versions}; load average {load:.1f}; limit {args.limit_mb:.0f} MB", flush=True)
    res = run(args.python, args.limit_mb, args.demo_args, args.warm_cache)
    if res["killed"]:
        outcome = f"killed above {args.limit_mb:.0f} MB"
    elif res["returncode"] == 0:
        metrics = [line for line in str(res["log"]).splitlines() if line.startswith("test RMSE")]
        outcome = "completed" + (f": {metrics[-1].split(' (')[0]}" if metrics else "")
    else:
        outcome = f"failed (exit {res['returncode']})"
        print(str(res["log"])[-3000:])
    demo = " ".join(["make demo", *args.demo_args]) + (", warm cache" if args.warm_cache else "")
    row = (f"| {time.strftime('%Y-%m-%d')} | {versions} | {demo} | {res['peak_mb']:.0f} | "
           f"{res['wall_s']:.0f} | {load:.1f} | {outcome} |")
    print(row)
    if args.output:
        with open(args.output, "a") as f:
            f.write(row + "\n")


if __name__ == "__main__":
    main()
