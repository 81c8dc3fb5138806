"""Time to first result: total wall from the call to the returned result, with default arguments.

Sections (``--sections 1,2,3,4``):

1. a one-hidden-layer tanh BNN (D = 4, H = 50, N = 200 synthetic points), 1 and 4 chains,
   150 warmup + 150 draws, max_tree_depth 6: bayesact ``mcmc`` with default arguments (and with
   ``compile=True``, cold and warm in-process; and 1 chain in new processes, defaults and
   ``compile=True``, with fresh caches and then a second process on them), Pyro NUTS
   (``jit_compile`` off and on, default arguments otherwise) and NumPyro NUTS (JIT included;
   run as a subprocess in a separate venv on the same data, ``chain_method="vectorized"`` for
   4 chains);
2. the diabetes BNN 10-50-50-1 (``benchmarks/_mcmc_models.py``), 4 chains, 300 + 300: cold (a new
   process with fresh Inductor and bayesact caches) and warm (a second new process on the same
   caches, as a user's second run of a script) totals and ESS per wall-second (min bulk ESS of
   f(x) at 20 inputs and the noise scale, over the total wall; max_tree_depth 6 as in
   ``benchmarks/mcmc.py``) vs NumPyro (vectorized; cold =
   first run with its JIT, warm = a second run of the same ``MCMC`` object);
3. ``nngp``/``ntk`` for relu and erf, depth 3, n ∈ {500, 2000, 5000} (d = 10, float32), default
   arguments (``fused="auto"``): first call, calls until the background-compiled kernel takes over
   (reported: at which call), then the steady state (median of 3), and the eager steady state
   (``fused=False``); vs neural-tangents (``--nt-python`` or ``BAYESACT_NT_PYTHON``: an interpreter
   with it; ``jax.jit(kernel_fn)``, first call including its compile, steady state median of 3) on
   the same inputs, its times used only if its kernel agrees with our float64 one;
4. compile seconds per model/kernel, cold (fresh ``TORCHINDUCTOR_CACHE_DIR``) and warm (a second
   process on the same directory): the fused activation (xATLU, forward + backward, through
   ``bayesact.compilation``), ``nngp(fused=True)`` (relu, depth 3) and ``mcmc(compile=True)``.

The main process points ``TORCHINDUCTOR_CACHE_DIR`` at a fresh temporary directory, so its
first compiled run is cold. Ratios compare runs of this one invocation.

Usage: ``nice -n 5 python benchmarks/first_result.py [--quick] [--numpyro-python PATH]
[--nt-python PATH] [--out benchmarks/results/first_result.md]``; ``--quick`` is a smoke test (tiny sizes, no
compile runs or children; NumPyro only with ``--numpyro-python``).
"""

from __future__ import annotations

import argparse
import json
import os
import platform
import subprocess
import sys
import tempfile
import textwrap
import time
import warnings
from pathlib import Path
from typing import Any

HERE = Path(__file__).resolve().parent
sys.path.insert(0, str(HERE))

if __name__ == "__main__" and "--child" not in sys.argv:  # before torch loads Dynamo
    os.environ["TORCHINDUCTOR_CACHE_DIR"] = tempfile.mkdtemp(prefix="first-result-inductor-")

import numpy as np  # noqa: E402
import pyro  # noqa: E402
import pyro.distributions as dist  # noqa: E402
import torch  # noqa: E402
from _mcmc_models import bnn_forward, bnn_model, diabetes  # noqa: E402

import bayesact  # noqa: E402
from bayesact.infer import mcmc  # noqa: E402

H1 = 50


def tanh_bnn(x: torch.Tensor, y: torch.Tensor | None = None) -> torch.Tensor:
    """MLP d -> 50 -> 1 with tanh, N(0, 1) weights and biases, HalfNormal(1) noise."""
    d = x.shape[-1]
    zero, one = x.new_zeros(()), x.new_ones(())
    w1 = pyro.sample("w1", dist.Normal(zero, one).expand([d, H1]).to_event(2))
    b1 = pyro.sample("b1", dist.Normal(zero, one).expand([H1]).to_event(1))
    w2 = pyro.sample("w2", dist.Normal(zero, one).expand([H1]).to_event(1))
    b2 = pyro.sample("b2", dist.Normal(zero, one))
    sigma = pyro.sample("sigma", dist.HalfNormal(one))
    f = torch.tanh(x @ w1 + b1) @ w2 + b2
    with pyro.plate("data", x.shape[0]):
        pyro.sample("y", dist.Normal(f, sigma), obs=y)
    return f


def synthetic(n: int = 200, d: int = 4, seed: int = 0) -> tuple[torch.Tensor, torch.Tensor]:
    gen = torch.Generator().manual_seed(seed)
    x = torch.randn(n, d, generator=gen)
    y = torch.sin(x @ torch.randn(d, generator=gen)) + 0.1 * torch.randn(n, generator=gen)
    return x, y


# -- NumPyro, in its own venv -------------------------------------------------------------------

_NUMPYRO_CHILD = textwrap.dedent(
    """
    import json, sys, time
    t0 = time.perf_counter()
    import jax, jax.numpy as jnp, numpy as np, numpyro, numpyro.distributions as nd
    from numpyro.infer import MCMC, NUTS
    import_s = time.perf_counter() - t0
    spec = json.load(open(sys.argv[1]))
    data = np.load(spec["data"])
    x, y = jnp.asarray(data["x"]), jnp.asarray(data["y"])
    hidden = spec["hidden"]

    def model(x, y):
        h, d = x, x.shape[-1]
        for i, width in enumerate(hidden):
            w = numpyro.sample(f"w{i + 1}", nd.Normal(0, 1).expand([d, width]).to_event(2))
            b = numpyro.sample(f"b{i + 1}", nd.Normal(0, 1).expand([width]).to_event(1))
            h, d = jnp.tanh(h @ w + b), width
        k = len(hidden) + 1
        w = numpyro.sample(f"w{k}", nd.Normal(0, 1).expand([d]).to_event(1))
        b = numpyro.sample(f"b{k}", nd.Normal(0, 1))
        sigma = numpyro.sample("sigma", nd.HalfNormal(1))
        with numpyro.plate("data", x.shape[0]):
            numpyro.sample("y", nd.Normal(h @ w + b, sigma), obs=y)

    runs = []
    t0 = time.perf_counter()
    runner = MCMC(NUTS(model, max_tree_depth=spec["depth"]), num_warmup=spec["warmup"],
                  num_samples=spec["samples"], num_chains=spec["chains"],
                  chain_method=spec["chain_method"], progress_bar=False)
    for r in range(spec["repeats"]):
        if r:
            t0 = time.perf_counter()
        runner.run(jax.random.PRNGKey(r), x, y)
        samples = runner.get_samples(group_by_chain=True)
        jax.block_until_ready(samples)
        runs.append(time.perf_counter() - t0)
        np.savez(spec["samples_out"].format(r=r), **{k: np.asarray(v) for k, v in samples.items()})
    print(json.dumps({"import_s": import_s, "runs": runs, "numpyro": numpyro.__version__,
                      "jax": jax.__version__}))
    """
)


def run_numpyro(python: str | None, x: torch.Tensor, y: torch.Tensor, hidden: list[int], chains: int,
                warmup: int, samples: int, depth: int, repeats: int) -> dict[str, Any] | None:
    """NumPyro's wall times and each run's samples in a subprocess; None if unavailable."""
    if not python or not Path(python).exists():
        return None
    with tempfile.TemporaryDirectory() as tmp:
        np.savez(f"{tmp}/data.npz", x=x.numpy(), y=y.numpy())
        spec = {"data": f"{tmp}/data.npz", "hidden": hidden, "chains": chains, "warmup": warmup,
                "samples": samples, "depth": depth, "repeats": repeats, "samples_out": f"{tmp}/s{{r}}.npz",
                "chain_method": "vectorized" if chains > 1 else "sequential"}
        Path(f"{tmp}/spec.json").write_text(json.dumps(spec))
        Path(f"{tmp}/child.py").write_text(_NUMPYRO_CHILD)
        env = {**os.environ, "JAX_PLATFORMS": "cpu"}
        t0 = time.perf_counter()
        out = json_from_process([python, f"{tmp}/child.py", f"{tmp}/spec.json"], env)
        process_s = time.perf_counter() - t0
        if out is None:
            return None
        out["process_s"] = process_s
        out["samples"] = [dict(np.load(f"{tmp}/s{r}.npz")) for r in range(repeats)]
    return out


# -- helpers ------------------------------------------------------------------------------------


def load() -> str:
    return " ".join(f"{v:.2f}" for v in os.getloadavg())


def timed(fn: Any) -> tuple[float, Any]:
    t0 = time.perf_counter()
    out = fn()
    return time.perf_counter() - t0, out


def fn_ess(samples: dict[str, Any], x: torch.Tensor) -> float:
    """Min bulk ESS of f(x) at the first 20 inputs and the noise scale (weights are not identifiable)."""
    import arviz as az

    arrays = {k: np.asarray(v) for k, v in samples.items()}
    f = bnn_forward(arrays, x[:20]).numpy()
    with warnings.catch_warnings():
        warnings.simplefilter("ignore")
        ess = az.ess(az.convert_to_dataset({"f": f, "sigma": arrays["sigma"]}), method="bulk")
    return float(min(float(ess[k].min()) for k in ess.data_vars))


def pyro_nuts(model: Any, x: torch.Tensor, y: torch.Tensor, chains: int, warmup: int, samples: int,
              depth: int, jit: bool) -> Any:
    """Pyro's own MCMC, default arguments apart from the tree depth, the counts and jit_compile."""
    from pyro.infer import MCMC, NUTS

    pyro.clear_param_store()
    kernel = NUTS(model, max_tree_depth=depth, jit_compile=jit, ignore_jit_warnings=True)
    runner = MCMC(kernel, num_samples=samples, warmup_steps=warmup, num_chains=chains,
                  disable_progbar=True)
    runner.run(x, y)
    return runner.get_samples(group_by_chain=True)


def script_fields(info: dict[str, Any]) -> dict[str, Any]:
    """When a run's NUTS steps became TorchScript, and how long the trace took (a child's JSON keys)."""
    return {"scripted_from": info.get("scripted_from_iteration"), "script_s": info.get("script_seconds", 0.0)}


def script_note(fields: dict[str, Any]) -> list[str]:
    """The table note of :func:`script_fields` (none when the run was not scripted)."""
    if fields.get("scripted_from") is None:
        return []
    return [f"TorchScript steps from iteration {fields['scripted_from']} "
            f"(traced in {fields['script_s']:.2g} s)"]


def fmt(v: float) -> str:
    return "–" if v != v else f"{v:.3g}"


# -- sections -----------------------------------------------------------------------------------


def section_small_bnn(args: argparse.Namespace, lines: list[str]) -> None:
    warmup, draws = (5, 5) if args.quick else (150, 150)
    x, y = synthetic()
    lines += [f"## 1. One-hidden-layer tanh BNN (D = 4, H = 50, N = 200), {warmup} + {draws}, "
              "max_tree_depth 6", "", f"load average (start): {load()}", "",
              "| engine | chains | total wall (s) | vs bayesact default | note |", "|---|---:|---:|---:|---|"]
    rows: list[tuple[str, int, float, str]] = []
    for chains in (1, 4):
        t, post = timed(lambda c=chains: mcmc(tanh_bnn, x, y, num_chains=c, num_warmup=warmup,
                                              num_samples=draws, max_tree_depth=6))
        notes = ["first call in the process"] if chains == 1 else []
        note = "; ".join(notes + script_note(script_fields(post.info)))
        rows.append(("bayesact mcmc (defaults)", chains, t, note))
        print(rows[-1], flush=True)
    for label in () if args.quick else ("cold", "warm"):
        t, _ = timed(lambda: mcmc(tanh_bnn, x, y, num_chains=4, num_warmup=warmup, num_samples=draws,
                                  max_tree_depth=6, compile=True))
        rows.append((f"bayesact mcmc(compile=True), {label}", 4, t,
                     "fresh Inductor cache" if label == "cold" else "second call, same process"))
        print(rows[-1], flush=True)
    build = wait_for_packages()  # the in-process runs' background builds: not while peers run
    if build is not None:
        print(f"package builds of the in-process runs finished (longest {build:.1f} s)", flush=True)
    env = child_env(args)
    for compile_arg, label in (() if args.quick else (("auto", "defaults"), ("true", "compile=True"))):
        for run in ("cold", "warm"):  # new processes: fresh caches, then a second process on them
            out = run_child(f"small:1:{compile_arg}:{warmup}:{draws}", env)
            if out is not None:
                note = (f"new process ({'fresh caches' if run == 'cold' else 'same caches'}); "
                        f"compile {out['compile_s']:.3g} s")
                note = "; ".join([note, *script_note(out)])
                if run == "cold":  # a user's second run comes later: the background build is done
                    build = wait_for_packages(env["BAYESACT_CACHE_DIR"])
                    note += "" if build is None else f"; package built in the background in {build:.3g} s"
                elif out["package"]:
                    note += "; compiled package loaded"
                rows.append((f"bayesact mcmc ({label}), {run}", 1, out["wall_s"], note))
                print(rows[-1], flush=True)
        env = child_env(args)
    pyro_chains = (1,) if args.quick else (1, 4)
    for jit in (False, True):
        for chains in pyro_chains:
            with warnings.catch_warnings():
                warnings.simplefilter("ignore")
                t, _ = timed(lambda c=chains, j=jit: pyro_nuts(tanh_bnn, x, y, c, warmup, draws, 6, j))
            rows.append((f"Pyro NUTS (jit_compile={jit})", chains, t, "MCMC.run to get_samples"))
            print(rows[-1], flush=True)
    for chains in (1, 4):
        res = run_numpyro(args.numpyro_python, x, y, [H1], chains, warmup, draws, 6, repeats=1)
        if res is None:
            rows.append(("NumPyro NUTS", chains, float("nan"), "not run (no --numpyro-python venv)"))
        else:
            method = "vectorized" if chains > 1 else "one chain"
            rows.append(("NumPyro NUTS", chains, res["runs"][0],
                         f"JIT included; {method}; subprocess total {res['process_s']:.3g} s incl. "
                         f"imports ({res['import_s']:.3g} s)"))
        print(rows[-1], flush=True)
    base = {c: t for name, c, t, _ in rows if name == "bayesact mcmc (defaults)"}
    for name, chains, t, note in rows:
        lines.append(f"| {name} | {chains} | {fmt(t)} | {fmt(t / base[chains])} | {note} |")
    lines += ["", f"load average (end): {load()}", ""]


def section_diabetes(args: argparse.Namespace, lines: list[str]) -> None:
    warmup, draws = (5, 5) if args.quick else (300, 300)
    x, y = diabetes()
    lines += [f"## 2. Diabetes BNN 10-50-50-1, 4 chains, {warmup} + {draws}, max_tree_depth 6 "
              "(as in benchmarks/mcmc.py), other arguments default", "",
              f"load average (start): {load()}", "",
              "| engine | run | total wall (s) | min bulk ESS (f(x), sigma) | ESS per wall-second | "
              "ESS/s vs NumPyro (same run) | NumPyro's wall / this wall |",
              "|---|---|---:|---:|---:|---:|---:|"]
    rows: list[tuple[str, str, float, float]] = []
    notes = []
    # cold: a fresh process with fresh Inductor and bayesact caches; warm: a second process on the
    # same directories (what a user's second run of the script sees)
    env = child_env(args)
    for label in ("cold", "warm"):
        out = run_child(f"diabetes:{warmup}:{draws}", env)
        if out is None:
            continue
        rows.append(("bayesact mcmc (defaults)", f"{label} (new process)", out["wall_s"], out["ess"]))
        if out["package"]:
            notes.append(f"{label}: compiled package loaded, compiled steps from iteration "
                         f"{out['compiled_from'] or 0} of {warmup + draws}")
        else:
            notes.append(f"{label}: compile {out['compile_s']:.3g} s in the background, compiled steps "
                         f"from iteration {out['compiled_from']} of {warmup + draws}")
        notes[-1] = "; ".join([notes[-1], *script_note(out)])
        if label == "cold":  # a user's second run comes later: the background build is done
            build = wait_for_packages(env["BAYESACT_CACHE_DIR"])
            if build is not None:
                notes[-1] += f" (package built in the background in {build:.3g} s)"
        print(rows[-1], notes[-1], flush=True)
    res = run_numpyro(args.numpyro_python, x, y, [50, 50], 4, warmup, draws, 6, repeats=2)
    numpyro_rate: dict[str, float] = {}
    numpyro_wall: dict[str, float] = {}
    if res is not None:
        for label, t, drawn in zip(("cold (JIT included)", "warm"), res["runs"], res["samples"], strict=True):
            e = fn_ess(drawn, x)
            rows.append(("NumPyro NUTS (vectorized)", label, t, e))
            numpyro_rate[label.split()[0]] = e / t
            numpyro_wall[label.split()[0]] = t
            print(rows[-1], flush=True)
    for name, label, t, e in rows:
        ref = numpyro_rate.get(label.split()[0], float("nan"))
        wall = numpyro_wall.get(label.split()[0], float("nan"))
        lines.append(f"| {name} | {label} | {fmt(t)} | {fmt(e)} | {fmt(e / t)} | {fmt(e / t / ref)} | "
                     f"{fmt(wall / t)} |")
    if res is None:
        lines.append("| NumPyro NUTS | – | – | – | – | not run (no --numpyro-python venv) | – |")
    else:
        lines.append("")
        lines.append("Each run's ESS is its own (NumPyro's warm run draws again with another key). The "
                     "minimum ESS over 21 quantities of a BNN posterior varies severalfold between "
                     "runs, so the ESS/s ratios are noisy; the wall-time ratios are not.")
    lines += ["", "bayesact (compile=\"auto\"): " + "; ".join(notes) + ".",
              "", f"load average (end): {load()}", ""]


def child_env(args: argparse.Namespace) -> dict[str, str]:
    """The environment of a child run: fresh Inductor and bayesact cache directories, and the
    thread count of ``--threads``."""
    env = {**os.environ, "TORCHINDUCTOR_CACHE_DIR": tempfile.mkdtemp(prefix="first-result-inductor-"),
           "BAYESACT_CACHE_DIR": tempfile.mkdtemp(prefix="first-result-bayesact-")}
    if args.threads:
        env["OMP_NUM_THREADS"] = str(args.threads)
    return env


def wait_for_packages(cache: str | None = None, timeout: float = 600.0) -> float | None:
    """Wait until no compiled-package build runs under ``cache`` (default this process's
    ``BAYESACT_CACHE_DIR``); returns the longest recorded build time in seconds (None: none)."""
    folder = Path(cache or os.environ["BAYESACT_CACHE_DIR"]) / "packages"
    deadline = time.monotonic() + timeout
    while list(folder.glob("*.lock")) and time.monotonic() < deadline:
        time.sleep(0.5)
    seconds = [json.loads(p.read_text()).get("seconds") for p in folder.glob("*.json")]
    return max((float(x) for x in seconds if x is not None), default=None)


def json_from_process(cmd: list[str], env: dict[str, str]) -> dict[str, Any] | None:
    """Run ``cmd`` with ``env``; the JSON object on its last line of output, or None (the process
    failed: the end of its stderr is printed)."""
    done = subprocess.run(cmd, env=env, capture_output=True, text=True, check=False)
    if done.returncode != 0:
        print(done.stderr[-3000:], file=sys.stderr)
        return None
    out: dict[str, Any] = json.loads(done.stdout.strip().splitlines()[-1])
    return out


def run_child(what: str, env: dict[str, str]) -> dict[str, Any] | None:
    """``what`` run by :func:`child` in a new process with ``env``; its JSON, or None (failed)."""
    return json_from_process([sys.executable, __file__, "--child", what], env)


_NT_CHILD = textwrap.dedent(
    """
    import json, sys, time
    t0 = time.perf_counter()
    import numpy as np
    import jax, jax.numpy as jnp
    import neural_tangents as nt
    from neural_tangents import stax
    import_s = time.perf_counter() - t0
    spec = json.load(open(sys.argv[1]))
    jnp.zeros(1).block_until_ready()  # the backend is up before any timing (torch's is too)
    out = []
    for job in spec["jobs"]:
        act = {"relu": stax.Relu, "erf": stax.Erf}[job["activation"]]
        layers = []
        for _ in range(spec["depth"]):
            layers += [stax.Dense(1, W_std=spec["w_std"], b_std=spec["b_std"]), act()]
        _, _, kernel_fn = stax.serial(*layers, stax.Dense(1, W_std=spec["w_std"], b_std=spec["b_std"]))
        fn = jax.jit(kernel_fn, static_argnames="get")
        x = jnp.asarray(np.load(job["x"]))
        t0 = time.perf_counter()
        k = fn(x, None, get=job["kernel"]).block_until_ready()
        first = time.perf_counter() - t0
        np.save(job["out"], np.asarray(k))
        steady = []
        for _ in range(3):
            t0 = time.perf_counter()
            fn(x, None, get=job["kernel"]).block_until_ready()
            steady.append(time.perf_counter() - t0)
        out.append({"first": first, "steady": sorted(steady)[1]})
    print(json.dumps({"import_s": import_s, "jobs": out, "jax": jax.__version__, "nt": nt.__version__}))
    """
)

#: agreement required of the peer's float32 kernel with our float64 one before its times are
#: reported: relative Frobenius difference (float32 rounding through three arc-cosine layers)
NT_RTOL_FROBENIUS = 1e-4


def _rel_frobenius(a: torch.Tensor, ref: torch.Tensor) -> float:
    return float((a.double() - ref).norm() / ref.norm())


def run_nt(python: str | None, jobs: list[dict[str, Any]], w_std: float, b_std: float, depth: int,
           threads: int | None) -> dict[str, Any] | None:
    """neural-tangents' first call (jit compile included) and steady state per job, in a subprocess
    with ``python``; the kernels are saved to each job's ``out``. None if unavailable."""
    if not python or not Path(python).exists():
        return None
    with tempfile.TemporaryDirectory() as tmp:
        spec = {"jobs": jobs, "w_std": w_std, "b_std": b_std, "depth": depth}
        Path(f"{tmp}/spec.json").write_text(json.dumps(spec))
        Path(f"{tmp}/child.py").write_text(_NT_CHILD)
        env = {**os.environ, "JAX_PLATFORMS": "cpu", "TF_CPP_MIN_LOG_LEVEL": "3"}
        if threads == 1:  # XLA on one thread, like torch
            env["XLA_FLAGS"] = "--xla_cpu_multi_thread_eigen=false intra_op_parallelism_threads=1"
        return json_from_process([python, f"{tmp}/child.py", f"{tmp}/spec.json"], env)


def _kernel_runs(kernel: Any, x: torch.Tensor, act: str, max_wait: float,
                 mine: list[Any]) -> dict[str, Any]:
    """Our first call, then calls until the compiled path of ``fused="auto"`` runs (at most
    ``max_wait`` s), then the steady state (median of 3); with the call index of the switch.
    ``mine``: this kernel and activation's compiled recursions (created at its first size)."""
    from bayesact.kernels import recursion

    def call() -> tuple[float, torch.Tensor]:
        return timed(lambda: kernel(x, activation=act, depth=3))

    before = set(map(id, recursion._compiled_layers.values()))
    first, result = call()
    mine += [c for c in recursion._compiled_layers.values() if id(c) not in before]
    calls, waited, switched = 1, 0.0, None
    start = time.perf_counter()
    while True:
        ready = [c for c in mine if c.state == "ready"]
        if ready and switched is None:
            switched = (calls + 1, time.perf_counter() - start + first)
        if switched is not None or not mine or all(c.state == "failed" for c in mine) or waited > max_wait:
            break
        call()
        calls += 1
        waited = time.perf_counter() - start
    steady = float(np.median([call()[0] for _ in range(3)]))
    return {"first": first, "steady": steady, "result": result, "switched": switched,
            "states": [c.state for c in mine]}


def _fresh_first_call(kernel_name: str, act: str, n: int, threads: int | None) -> float:
    """Our first call in a fresh process (seconds; the process's imports excluded)."""
    cmd = [sys.executable, __file__, "--child", f"kernel:{kernel_name}:{act}:{n}"]
    env = {**os.environ, "OMP_NUM_THREADS": str(threads)} if threads else dict(os.environ)
    out = json_from_process(cmd, env)
    return float("nan") if out is None else float(out["first_call_s"])


def section_kernels(args: argparse.Namespace, lines: list[str]) -> None:
    from bayesact.kernels import DEFAULT_BIAS_STD, DEFAULT_WEIGHT_STD, nngp, ntk

    sizes = (100, 200) if args.quick else (500, 2000, 5000)
    nt_python = args.nt_python or os.environ.get("BAYESACT_NT_PYTHON")
    tmp = Path(tempfile.mkdtemp(prefix="first-result-nt-"))
    configs = [(kn, k, act) for kn, k in (("nngp", nngp), ("ntk", ntk)) for act in ("relu", "erf")]
    inputs = {n: torch.randn(n, 10, generator=torch.Generator().manual_seed(n)) for n in sizes}
    for n, x in inputs.items():
        np.save(tmp / f"x{n}.npy", x.numpy())
    jobs = [{"kernel": kn, "activation": act, "x": str(tmp / f"x{n}.npy"),
             "out": str(tmp / f"{kn}_{act}_{n}.npy")} for kn, _, act in configs for n in sizes]
    lines += ["## 3. NNGP / NTK, depth 3, d = 10, float32, default arguments, vs neural-tangents", "",
              f"load average (start): {load()}", ""]
    reps = 1 if args.quick else 3
    versions: dict[str, str] = {}
    lines += [f"| kernel | activation | n | ours first call, fresh process (s, median of {reps}) | ours "
              f"first call, this process (s) | NT first call, fresh process (s, median of {reps}) | "
              "NT / ours first | ours steady (s) | NT steady (s) | NT / ours steady | ours eager steady (s) "
              "| compiled from call (s after first) | rel. Frobenius error vs float64: NT / ours |",
              "|---|---|---:|---:|---:|---:|---:|---:|---:|---:|---:|---|---|"]
    max_wait = 5.0 if args.quick else 180.0
    for i, (kernel_name, kernel, act) in enumerate(configs):
        mine: list[Any] = []
        for j, n in enumerate(sizes):
            x = inputs[n]
            # first calls in fresh processes, ours and the peer's interleaved (same load)
            job = jobs[i * len(sizes) + j]
            firsts, peer_runs = [], []
            for _ in range(reps):
                firsts.append(_fresh_first_call(kernel_name, act, n, args.threads))
                res = run_nt(nt_python, [job], DEFAULT_WEIGHT_STD, DEFAULT_BIAS_STD, 3, args.threads)
                if res is not None:
                    peer_runs.append(res["jobs"][0])
                    versions = {"nt": res["nt"], "jax": res["jax"]}
            fresh = float(np.median(firsts))
            runs = _kernel_runs(kernel, x, act, max_wait, mine)
            eager = float(np.median([timed(lambda k=kernel, a=act, xx=x: k(xx, activation=a, depth=3,
                                                                         fused=False))[0]
                                     for _ in range(3)]))
            nt_first = nt_steady = float("nan")
            agreement = "not run"
            ref = kernel(x.double(), activation=act, depth=3, fused=False)  # float64 reference
            ours_err = _rel_frobenius(runs["result"], ref)
            agreement = f"– / {ours_err:.1e}"
            if peer_runs:
                theirs = torch.from_numpy(np.load(job["out"]))
                nt_err = _rel_frobenius(theirs, ref)
                agreement = f"{nt_err:.1e} / {ours_err:.1e}"
                if nt_err <= NT_RTOL_FROBENIUS:
                    nt_first = float(np.median([r["first"] for r in peer_runs]))
                    nt_steady = float(np.median([r["steady"] for r in peer_runs]))
                else:
                    agreement += " NT DISAGREES: its times not used"
            switched = runs["switched"]
            took_over = ("never (eager)" if switched is None else
                         f"call {switched[0]} ({switched[1]:.3g} s)")
            if switched is None and runs["states"]:
                took_over += f" [{', '.join(runs['states'])}]"
            lines.append(f"| {kernel_name} | {act} | {n} | {fmt(fresh)} | {fmt(runs['first'])} | "
                         f"{fmt(nt_first)} | {fmt(nt_first / fresh)} | {fmt(runs['steady'])} | "
                         f"{fmt(nt_steady)} | "
                         f"{fmt(nt_steady / runs['steady'])} | {fmt(eager)} | {took_over} | {agreement} |")
            print(lines[-1], flush=True)
    if not versions:
        lines.append("\nneural-tangents not run (no --nt-python / BAYESACT_NT_PYTHON interpreter with it).")
    else:
        lines.append(f"\nneural-tangents {versions['nt']} on jax {versions['jax']} (CPU"
                     + (", XLA on one thread" if args.threads == 1 else "")
                     + "), `jax.jit(kernel_fn)`, one fresh subprocess per size and repeat (each right after "
                     "ours, same load), on the same float32 inputs (.npy), "
                     f"W_std = {DEFAULT_WEIGHT_STD}, b_std = {DEFAULT_BIAS_STD}; its first call includes "
                     "the jit compile (imports and backend start excluded, as for ours); steady = median "
                     f"over the {reps} processes of each one's median of 3 (block_until_ready). The peer's "
                     "times are "
                     "used only where its kernel is within rel. Frobenius "
                     f"{NT_RTOL_FROBENIUS:g} of ours in float64 (eager, same inputs); the last column "
                     "gives both libraries' float32 errors against that reference.")
    lines += ["", f"load average (end): {load()}", ""]


# -- compile children ---------------------------------------------------------------------------


def child(what: str) -> None:
    """Runs in a subprocess with its own TORCHINDUCTOR_CACHE_DIR; prints JSON."""
    out: dict[str, Any] = {}
    if what.startswith("diabetes:"):  # diabetes:<warmup>:<draws>, 4 chains, default arguments
        _, warmup, draws = what.split(":")
        x, y = diabetes()
        t, post = timed(lambda: mcmc(bnn_model, x, y, num_chains=4, num_warmup=int(warmup),
                                     num_samples=int(draws), max_tree_depth=6, progress=False))
        print(json.dumps({"wall_s": t, "ess": fn_ess(post.samples, x),
                          "compile_s": post.info.get("compile_seconds", 0.0),
                          "compiled_from": post.info.get("compiled_from_iteration"),
                          **script_fields(post.info),
                          "package": post.info.get("compiled_package", False)}))
        return
    if what.startswith("small:"):  # small:<chains>:<auto|true>:<warmup>:<draws>, the tanh BNN
        _, chains, compile_arg, warmup, draws = what.split(":")
        x, y = synthetic()
        t, post = timed(lambda: mcmc(tanh_bnn, x, y, num_chains=int(chains), num_warmup=int(warmup),
                                     num_samples=int(draws), max_tree_depth=6, progress=False,
                                     compile=True if compile_arg == "true" else "auto"))
        print(json.dumps({"wall_s": t, "compile_s": post.info.get("compile_seconds", 0.0),
                          **script_fields(post.info), "package": post.info.get("compiled_package", False)}))
        return
    if what.startswith("kernel:"):  # kernel:<nngp|ntk>:<activation>:<n>, default arguments
        from bayesact import kernels as K

        _, name, act, size = what.split(":")
        x = torch.randn(int(size), 10, generator=torch.Generator().manual_seed(int(size)))
        t, _ = timed(lambda: getattr(K, name)(x, activation=act, depth=3))
        print(json.dumps({"first_call_s": t}))
        return
    if what == "activation":
        from bayesact import activations as A
        from bayesact.activations import fused

        x = torch.randn(4096, 64, requires_grad=True)
        t, _ = timed(lambda: A.get("xatlu", fused=True)(x).sum().backward())
        (kernels,) = fused._cache.values()
        out = {"compile_s": kernels.forward.compile_seconds + kernels.backward.compile_seconds,
               "first_call_s": t, "states": [kernels.forward.state, kernels.backward.state]}
    elif what == "nngp":
        from bayesact.kernels import nngp

        x = torch.randn(500, 10)
        first, _ = timed(lambda: nngp(x, activation="relu", depth=3, fused=True))
        steady = min(timed(lambda: nngp(x, activation="relu", depth=3, fused=True))[0] for _ in range(3))
        out = {"compile_s": first - steady, "first_call_s": first}
    elif what == "mcmc":
        x, y = synthetic()
        t, post = timed(lambda: mcmc(tanh_bnn, x, y, num_chains=4, num_warmup=20, num_samples=20,
                                     max_tree_depth=6, compile=True, progress=False))
        out = {"compile_s": post.info.get("compile_seconds", float("nan")), "first_call_s": t}
    elif what == "mcmc_diabetes":
        x, y = diabetes()
        t, post = timed(lambda: mcmc(bnn_model, x, y, num_chains=4, num_warmup=20, num_samples=20,
                                     max_tree_depth=6, compile=True, progress=False))
        out = {"compile_s": post.info.get("compile_seconds", float("nan")), "first_call_s": t}
    elif what == "script":
        from bayesact.infer import sampler

        sampler.AUTO_SCRIPT_MIN_SECONDS = 0.0  # script after the probe iterations whatever the length
        x, y = diabetes()
        t, post = timed(lambda: mcmc(bnn_model, x, y, num_chains=4, num_warmup=20, num_samples=20,
                                     max_tree_depth=6, progress=False))
        out = {"compile_s": post.info.get("script_seconds", float("nan")), "first_call_s": t}
    from torch._dynamo.utils import counters

    out["fxgraph"] = {k: v for k, v in counters["inductor"].items() if k.startswith("fxgraph")}
    print(json.dumps(out))


def section_compile(args: argparse.Namespace, lines: list[str]) -> None:
    lines += ["## 4. Compile seconds, cold (fresh TORCHINDUCTOR_CACHE_DIR) and warm (a second process, "
              "same directory)", "", f"load average (start): {load()}", "",
              "| what | cold compile (s) | warm compile (s) | cold / warm | first call cold / warm (s) | "
              "Inductor FX-graph cache (warm) |", "|---|---:|---:|---:|---:|---|"]
    labels = {"activation": "fused xATLU forward + backward (bayesact.compilation), 4096 x 64",
              "nngp": "nngp(fused=True), relu, depth 3, n = 500 (first - steady)",
              "mcmc": "mcmc(compile=True), tanh BNN, 4 chains (info['compile_seconds'])",
              "mcmc_diabetes": "mcmc(compile=True), diabetes BNN 10-50-50-1, 4 chains "
                               "(info['compile_seconds'])",
              "script": "TorchScript NUTS pair step (compile='auto' on the CPU), diabetes BNN 10-50-50-1, "
                        "4 chains (info['script_seconds']; no disk cache)"}
    for what, label in labels.items():
        cache = tempfile.mkdtemp(prefix="first-result-cold-")
        # Inductor's own cache only: compiled packages (loaded instead, see sections 1-2) off
        env = {**os.environ, "TORCHINDUCTOR_CACHE_DIR": cache, "BAYESACT_PACKAGES": "0"}
        cold = run_child(what, env)
        warm = run_child(what, env)  # a second process on the same cache directory
        if cold is None or warm is None:
            lines.append(f"| {label} | failed | failed | – | – | – |")
            continue
        lines.append(f"| {label} | {cold['compile_s']:.3g} | {warm['compile_s']:.3g} | "
                     f"{cold['compile_s'] / max(warm['compile_s'], 1e-9):.3g} | "
                     f"{cold['first_call_s']:.3g} / {warm['first_call_s']:.3g} | {warm['fxgraph']} |")
        print(lines[-1], flush=True)
    lines += ["", f"load average (end): {load()}", ""]


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--quick", action="store_true", help="smoke test: tiny sizes, no compile children")
    parser.add_argument("--sections", default="1,2,3,4", help="subset of 1,2,3,4, run in this order")
    parser.add_argument("--numpyro-python", default=None, help="python of a venv with jax + numpyro")
    parser.add_argument("--nt-python", default=None,
                        help="python of a venv with neural-tangents (default: $BAYESACT_NT_PYTHON)")
    parser.add_argument("--out", default=None, help="write the markdown here (else print only)")
    parser.add_argument("--threads", type=int, default=None, help="torch intra-op threads (default: torch's)")
    parser.add_argument("--child", default=None, help=argparse.SUPPRESS)
    args = parser.parse_args()
    if args.child:
        child(args.child)
        return
    if args.threads:
        torch.set_num_threads(args.threads)
    # this process compiles into fresh caches too (cold rows are cold; nothing from earlier runs)
    os.environ["BAYESACT_CACHE_DIR"] = tempfile.mkdtemp(prefix="first-result-main-")
    order = [s.strip() for s in args.sections.split(",")]
    if args.quick and "4" in order:
        order.remove("4")
    lines = ["# Time to first result", "",
             f"- cpu: {platform.processor() or platform.machine()}, {os.cpu_count()} cores "
             "(shared with other jobs: see the load averages)",
             f"- torch threads: {torch.get_num_threads()}"
             + (" (--threads; the library default is torch's)" if args.threads else ""),
             f"- python: {platform.python_version()}",
             f"- torch: {torch.__version__}", f"- pyro: {pyro.__version__}",
             f"- bayesact: {bayesact.__version__}",
             f"- date: {time.strftime('%Y-%m-%d %H:%M UTC', time.gmtime())}", ""]
    sections = {"1": section_small_bnn, "2": section_diabetes, "3": section_kernels, "4": section_compile}
    for key in order:
        if key not in sections:
            parser.error(f"--sections: expected a subset of 1,2,3,4, got {key!r}")
        sections[key](args, lines)
        if args.out:
            Path(args.out).write_text("\n".join(lines) + "\n")
    print("\n".join(lines))


if __name__ == "__main__":
    main()
