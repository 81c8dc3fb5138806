"""MCMC benchmark: bayesact NUTS vs Pyro NUTS (jit_compile off/on) vs NumPyro NUTS.

Tasks: (a) BNN d -> 50 -> 50 -> 1 (tanh, N(0,1) priors, HalfNormal noise) on scikit-learn's
diabetes data (N = 442); (b) logistic regression on scikit-learn's breast cancer data
(N = 569, d = 30). All engines run the same model, data, dtype (float32), tree depth and
iteration counts, one process, one intra-op thread (``--threads``).

Reported per engine: sampling wall time (warmup and compilation excluded and listed
separately), gradient count, min bulk ESS over all parameters (and, for the BNN, over the
noise scale and the network output f(x) at 20 inputs: weights are not identifiable) and ESS
per second. For bayesact also the overhead ratio

    R = sampling wall time / (batched gradient calls x g_floor(C)),

with g_floor(C) the fastest bare value-and-gradient of the same log density for C chains
(hand-written torch with autograd, the captured graph, the graph compiled by torch.compile,
and by bayesact with its float32 rational tanh), and the lockstep efficiency
Σ useful chain-steps / (C x batched calls).

Usage: ``python benchmarks/mcmc.py [--quick] [--out benchmarks/results/mcmc.md]``.
"""

from __future__ import annotations

import argparse
import os
import platform
import sys
import time
import warnings
from dataclasses import dataclass
from typing import Any

import numpy as np
import torch

sys.path.insert(0, os.path.dirname(os.path.abspath(__file__)))
from _mcmc_models import (
    HIDDEN,
    bnn_bare_potential,
    bnn_forward,
    bnn_model,
    breast_cancer,
    diabetes,
    logistic_bare_potential,
    logistic_model,
    sghmc_bnn_bare_potential,
    sghmc_bnn_model,
)

import bayesact
from bayesact.infer import Posterior, mcmc, sghmc
from bayesact.infer.compiled import CompiledFunction
from bayesact.infer.minibatch import MinibatchPotential
from bayesact.infer.potential import Potential


@dataclass
class Task:
    name: str
    model: Any
    data: tuple[torch.Tensor, torch.Tensor]
    bare: Any
    num_warmup: int
    num_samples: int
    max_tree_depth: int
    pyro_chains: int
    pyro_scale: float = 1.0  # fraction of warmup/draws for Pyro (its eager BNN is slow)


@dataclass
class Row:
    engine: str
    chains: int
    warmup_s: float
    sampling_s: float
    compile_s: float
    grads: float
    min_ess: float
    min_ess_fn: float
    note: str = ""
    batched_calls: float = float("nan")
    ess_within: float = float("nan")  # sum over chains of each chain's own min bulk ESS

    @property
    def ms_per_gradient(self) -> float:
        """Sampling wall time per chain-gradient (leapfrog step of one chain)."""
        return self.sampling_s / self.grads * 1e3 if self.grads == self.grads else float("nan")

    @property
    def ess_per_s(self) -> float:
        return self.min_ess / self.sampling_s if self.sampling_s > 0 else float("nan")

    @property
    def ess_fn_per_s(self) -> float:
        return self.min_ess_fn / self.sampling_s if self.sampling_s > 0 else float("nan")


# ------------------------------------------------------------------------------------------
def machine() -> dict[str, str]:
    cpu = platform.processor()
    try:
        with open("/proc/cpuinfo") as fh:
            for line in fh:
                if line.startswith("model name"):
                    cpu = line.split(":", 1)[1].strip()
                    break
    except OSError:
        pass
    import pyro

    info = {
        "cpu": cpu,
        "cores": str(os.cpu_count()),
        "torch threads": str(torch.get_num_threads()),
        "python": platform.python_version(),
        "torch": torch.__version__,
        "pyro": pyro.__version__,
        "bayesact": bayesact.__version__,
        "load average (start)": " ".join(f"{x:.2f}" for x in os.getloadavg()),
    }
    try:
        import jax
        import numpyro

        info["numpyro"] = numpyro.__version__
        info["jax"] = jax.__version__
    except ImportError:
        info["numpyro"] = "not installed (column skipped)"
    return info


def timeit(fn, z, reps: int) -> float:
    for _ in range(max(5, reps // 10)):
        fn(z)
    best = float("inf")
    for _ in range(3):
        t0 = time.perf_counter()
        for _ in range(reps):
            fn(z)
        best = min(best, (time.perf_counter() - t0) / reps)
    return best


def gradient_floor(task: Task, chains: int, reps: int) -> dict[str, float]:
    """Seconds per batched value-and-gradient of the same log density, by implementation."""
    x, y = task.data
    bare, dim = task.bare(x, y)
    z = torch.randn(chains, dim) * 0.1

    def bare_vg(z: torch.Tensor):
        zz = z.detach().requires_grad_(True)
        u = bare(zz)
        (g,) = torch.autograd.grad(u.sum(), zz)
        return u, g

    pot = Potential(task.model, (x, y), {}, torch.float32, torch.device("cpu"))
    pot.prepare(chains)
    out = {"bare torch autograd": timeit(bare_vg, z, reps)}
    if pot.graph is not None:
        out["captured graph"] = timeit(pot.graph, z, reps)
        with warnings.catch_warnings():
            warnings.simplefilter("ignore")
            compiled = torch.compile(pot.graph, dynamic=False)
            compiled(z)
        out["compiled graph"] = timeit(compiled, z, reps)
        # what mcmc(compile=True) runs: Inductor without guards, float32 CPU tanh rational
        out["compiled graph, bayesact (fast tanh)"] = timeit(CompiledFunction(pot.graph, (z,)), z, reps)
    return out


# ------------------------------------------------------------------------------------------
def _min_bulk_ess(arrays: dict[str, np.ndarray]) -> float:
    """Minimum bulk ESS over every element of every array (chain, draw, ...)."""
    import arviz as az

    with warnings.catch_warnings():
        warnings.simplefilter("ignore")
        ess = az.ess(az.convert_to_dataset(arrays), method="bulk")
    return float(min(float(ess[k].min()) for k in ess.data_vars))


def _function_ess(arrays: dict[str, np.ndarray], task: Task) -> float:
    """Min bulk ESS of what is identifiable: f(x) at 20 inputs and sigma for the BNN, else all."""
    if not task.name.startswith("BNN"):
        return _min_bulk_ess(arrays)
    f = bnn_forward(arrays, task.data[0][:20]).numpy()
    return _min_bulk_ess({"f": f, "sigma": arrays["sigma"]})


def min_ess(samples: dict[str, Any], task: Task) -> tuple[float, float]:
    """(min bulk ESS over all parameters, min bulk ESS of the identifiable quantities)."""
    arrays = {k: np.asarray(v) for k, v in samples.items()}
    overall = _min_bulk_ess(arrays)
    return overall, overall if not task.name.startswith("BNN") else _function_ess(arrays, task)


def within_chain_ess(samples: dict[str, Any], task: Task) -> float:
    """Sum over chains of each chain's own minimum bulk ESS (f(x) and sigma for the BNN).

    A single chain's ESS cannot see disagreement between chains (a BNN's modes), so this compares
    an engine that runs one chain with one that runs several on equal terms.
    """
    arrays = {k: np.asarray(v) for k, v in samples.items()}
    chains = next(iter(arrays.values())).shape[0]
    return sum(_function_ess({k: v[c : c + 1] for k, v in arrays.items()}, task) for c in range(chains))


def run_bayesact(task: Task, chains: int, compile: bool, seed: int) -> tuple[Row, Posterior]:
    x, y = task.data
    with warnings.catch_warnings():
        warnings.simplefilter("ignore")
        post = mcmc(
            task.model, x, y, num_chains=chains, num_warmup=task.num_warmup,
            num_samples=task.num_samples, max_tree_depth=task.max_tree_depth, seed=seed,
            progress=False, compile=compile,
        )
    info = post.info
    e, ef = min_ess(post.samples, task)
    row = Row(
        f"bayesact ({'compiled' if compile else 'captured'})", chains,
        info["warmup_seconds"], info["sampling_seconds"],
        info.get("compile_seconds", 0.0), info["chain_gradients"], e, ef,
        note=f"lockstep eff {info['chain_gradients'] / max(1, chains * info['sampling_gradient_calls']):.2f}",
        batched_calls=info["sampling_gradient_calls"],
        ess_within=within_chain_ess(post.samples, task),
    )
    return row, post


class _CountingPotentialGrad:
    """Wraps ``pyro.ops.integrator.potential_grad`` (one call per leapfrog gradient) to count calls."""

    def __init__(self) -> None:
        import pyro.ops.integrator as integrator

        self.module = integrator
        self.original = integrator.potential_grad
        self.calls = 0

    def __enter__(self) -> _CountingPotentialGrad:
        def counted(potential_fn: Any, z: Any) -> Any:
            self.calls += 1
            return self.original(potential_fn, z)

        self.module.potential_grad = counted
        return self

    def __exit__(self, *exc: Any) -> None:
        self.module.potential_grad = self.original


def run_pyro(task: Task, jit: bool, seed: int) -> Row:
    x, y = task.data
    parts = []
    leapfrogs = 0
    for chain in range(task.pyro_chains):
        with warnings.catch_warnings(), _CountingPotentialGrad() as counter:
            warnings.simplefilter("ignore")
            parts.append(mcmc(
                task.model, x, y, engine="pyro", num_chains=1,
                num_warmup=int(task.num_warmup * task.pyro_scale),
                num_samples=int(task.num_samples * task.pyro_scale),
                max_tree_depth=task.max_tree_depth,
                seed=seed + chain, progress=False, jit_compile=jit,
            ))
        leapfrogs += counter.calls
    post = Posterior.concat_chains(parts)
    e, ef = min_ess(post.samples, task)
    warm = sum(p.info["warmup_seconds"] for p in parts)
    samp = sum(p.info["sampling_seconds"] for p in parts)
    grads = float("nan")  # Pyro reports no per-draw step count; the cost per gradient is in the note
    note = f"{1e3 * (warm + samp) / leapfrogs:.3g} ms per gradient (warmup + sampling, {leapfrogs} leapfrogs)"
    if task.pyro_scale != 1:
        note += (f"; {int(task.num_warmup * task.pyro_scale)} warmup + "
                 f"{int(task.num_samples * task.pyro_scale)} draws")
    return Row(f"Pyro NUTS (jit_compile={jit})", task.pyro_chains, warm, samp, 0.0, grads, e, ef,
               note=note, ess_within=within_chain_ess(post.samples, task))


def run_numpyro(task: Task, chains: int, seed: int) -> Row | None:
    try:
        import jax
        import jax.numpy as jnp
        import numpyro
        import numpyro.distributions as nd
        from numpyro.infer import MCMC, NUTS
    except ImportError:
        return None
    x, y = (jnp.asarray(t.numpy()) for t in task.data)

    def bnn(x, y):
        d = x.shape[-1]
        w1 = numpyro.sample("w1", nd.Normal(0, 1).expand([d, HIDDEN]).to_event(2))
        b1 = numpyro.sample("b1", nd.Normal(0, 1).expand([HIDDEN]).to_event(1))
        w2 = numpyro.sample("w2", nd.Normal(0, 1).expand([HIDDEN, HIDDEN]).to_event(2))
        b2 = numpyro.sample("b2", nd.Normal(0, 1).expand([HIDDEN]).to_event(1))
        w3 = numpyro.sample("w3", nd.Normal(0, 1).expand([HIDDEN]).to_event(1))
        b3 = numpyro.sample("b3", nd.Normal(0, 1))
        sigma = numpyro.sample("sigma", nd.HalfNormal(1))
        h = jnp.tanh(jnp.tanh(x @ w1 + b1) @ w2 + b2)
        with numpyro.plate("data", x.shape[0]):
            numpyro.sample("y", nd.Normal(h @ w3 + b3, sigma), obs=y)

    def logreg(x, y):
        beta = numpyro.sample("beta", nd.Normal(0, 1).expand([x.shape[-1]]).to_event(1))
        alpha = numpyro.sample("alpha", nd.Normal(0, 1))
        with numpyro.plate("data", x.shape[0]):
            numpyro.sample("y", nd.Bernoulli(logits=x @ beta + alpha), obs=y)

    model = bnn if task.name.startswith("BNN") else logreg
    kernel = NUTS(model, max_tree_depth=task.max_tree_depth, target_accept_prob=0.8)
    runner = MCMC(kernel, num_warmup=task.num_warmup, num_samples=task.num_samples,
                  num_chains=chains, chain_method="sequential", progress_bar=False)
    key = jax.random.PRNGKey(seed)
    t0 = time.perf_counter()
    runner.warmup(key, x, y, extra_fields=("num_steps",), collect_warmup=False)
    jax.block_until_ready(runner.last_state)
    warm = time.perf_counter() - t0
    t0 = time.perf_counter()
    runner.run(runner.post_warmup_state.rng_key, x, y, extra_fields=("num_steps",))
    jax.block_until_ready(runner.get_samples())
    samp = time.perf_counter() - t0
    samples = runner.get_samples(group_by_chain=True)
    grads = float(np.asarray(runner.get_extra_fields()["num_steps"]).sum())
    e, ef = min_ess(samples, task)  # both helpers convert the JAX arrays with np.asarray
    return Row("NumPyro NUTS", chains, warm, samp, 0.0, grads, e, ef,
               note="chain_method='sequential'; warmup time includes JIT compilation",
               ess_within=within_chain_ess(samples, task))


# ------------------------------------------------------------------------------------------
def fmt(v: float, digits: int = 3) -> str:
    if v != v:  # NaN
        return "–"
    return f"{v:.{digits}g}"


def report(task: Task, floor1: dict, floor_c: dict, chains: int, rows: list[Row],
           bayes_row: Row) -> str:
    gc = min(floor_c.values())
    lines = [f"### {task.name}", ""]
    lines.append(f"Settings: {task.num_warmup} warmup + {task.num_samples} draws per chain, "
                 f"max_tree_depth {task.max_tree_depth}, float32.")
    lines.append("")
    lines.append("Gradient floor (value and gradient of the log joint, best of implementations):")
    lines.append("")
    lines.append(f"| implementation | 1 chain (ms) | {chains} chains, batched (ms) |")
    lines.append("|---|---:|---:|")
    for k in floor1:
        lines.append(f"| {k} | {floor1[k] * 1e3:.3f} | {floor_c.get(k, float('nan')) * 1e3:.3f} |")
    lines.append("")
    r_batched = bayes_row.sampling_s / (bayes_row.batched_calls * gc)
    lines.append(
        f"bayesact overhead ratio R = {bayes_row.sampling_s:.2f} s / ({int(bayes_row.batched_calls)} "
        f"batched calls x {gc * 1e3:.3f} ms) = **{r_batched:.2f}** (target <= 1.5); {bayes_row.note}."
    )
    lines.append("")
    lines.append("| engine | chains | warmup (s) | compile (s) | sampling (s) | chain-gradients | "
                 "ms per chain-gradient | min bulk ESS | ESS/s | ESS/s vs Pyro (jit off) | "
                 "ESS/s vs NumPyro | note |")
    lines.append("|---|---:|---:|---:|---:|---:|---:|---:|---:|---:|---:|---|")
    pyro_off = next((r for r in rows if "jit_compile=False" in r.engine), None)
    nump = next((r for r in rows if r.engine.startswith("NumPyro")), None)
    fn_label = task.name.startswith("BNN")
    for r in rows:
        ess = r.ess_fn_per_s if fn_label else r.ess_per_s
        base = (pyro_off.ess_fn_per_s if fn_label else pyro_off.ess_per_s) if pyro_off else None
        vs_pyro = ess / base if base else float("nan")
        vs_np = ess / (nump.ess_fn_per_s if fn_label else nump.ess_per_s) if nump else float("nan")
        ess_txt = f"{fmt(r.min_ess_fn)} (all params {fmt(r.min_ess)})" if fn_label else fmt(r.min_ess)
        lines.append(
            f"| {r.engine} | {r.chains} | {fmt(r.warmup_s)} | {fmt(r.compile_s)} | {fmt(r.sampling_s)} | "
            f"{fmt(r.grads, 6)} | {fmt(r.ms_per_gradient)} | {ess_txt} | {fmt(ess)} | "
            f"{fmt(vs_pyro)} | {fmt(vs_np)} | {r.note} |"
        )
    if fn_label:
        lines.append("")
        lines.append("BNN ESS is the minimum over sigma and f(x) at 20 inputs (weights are not "
                     "identifiable); 'all params' is the minimum over every weight.")
        lines.append("")
        lines.append("Within-chain ESS (each chain's own min bulk ESS, summed over chains: blind to "
                     "disagreement between chains, so one chain and several compare on equal terms):")
        lines.append("")
        lines.append("| engine | chains | sum of single-chain ESS | per s | vs Pyro (jit off) | vs NumPyro |")
        lines.append("|---|---:|---:|---:|---:|---:|")
        base = pyro_off.ess_within / pyro_off.sampling_s if pyro_off else float("nan")
        ref = nump.ess_within / nump.sampling_s if nump else float("nan")
        for r in rows:
            rate = r.ess_within / r.sampling_s
            lines.append(f"| {r.engine} | {r.chains} | {fmt(r.ess_within)} | {fmt(rate)} | "
                         f"{fmt(rate / base)} | {fmt(rate / ref)} |")
    lines.append("")
    return "\n".join(lines)


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--quick", action="store_true", help="tiny iteration counts (smoke test)")
    parser.add_argument("--threads", type=int, default=1)
    parser.add_argument("--chains", type=int, default=4)
    parser.add_argument("--tasks", default="bnn,logreg")
    parser.add_argument("--no-pyro", action="store_true")
    parser.add_argument("--with-eager", action="store_true", help="also run bayesact uncompiled")
    parser.add_argument("--out", default=None, help="write the markdown report here")
    parser.add_argument("--sghmc-steps", type=int, default=4000,
                        help="SGHMC steps per chain for the SGHMC section (0: skip it)")
    parser.add_argument("--bnn-warmup", type=int, default=200, help="BNN warmup iterations per chain")
    parser.add_argument("--bnn-draws", type=int, default=200, help="BNN draws per chain")
    parser.add_argument("--pyro-chains", type=int, default=1, help="Pyro chains (run one after another)")
    parser.add_argument("--pyro-scale", type=float, default=0.5,
                        help="fraction of the BNN warmup and draws that Pyro runs (its eager BNN is slow)")
    args = parser.parse_args()
    torch.set_num_threads(args.threads)
    os.environ.setdefault("XLA_FLAGS", "--xla_cpu_multi_thread_eigen=false intra_op_parallelism_threads=1")
    scale = 0.1 if args.quick else 1.0

    def n(k: int) -> int:
        return max(10, int(k * scale))

    tasks = {
        "bnn": Task("BNN 10-50-50-1 on diabetes (N = 442)", bnn_model, diabetes(), bnn_bare_potential,
                    n(args.bnn_warmup), n(args.bnn_draws), 6, args.pyro_chains, args.pyro_scale),
        "logreg": Task("Logistic regression on breast cancer (N = 569, d = 30)", logistic_model,
                       breast_cancer(), logistic_bare_potential, n(500), n(500), 10, args.pyro_chains),
    }
    info = machine()
    out = ["# MCMC benchmark: bayesact vs Pyro vs NumPyro", ""]
    out += [f"- {k}: {v}" for k, v in info.items()]
    out.append("")
    for key in args.tasks.split(","):
        task = tasks[key]
        print(f"== {task.name}", flush=True)
        floor1 = gradient_floor(task, 1, 200)
        floor_c = gradient_floor(task, args.chains, 200)
        print("floor", floor1, floor_c, flush=True)
        rows = []
        bayes_row, _ = run_bayesact(task, args.chains, compile=True, seed=0)
        rows.append(bayes_row)
        print(bayes_row, flush=True)
        if args.with_eager:
            eager_row, _ = run_bayesact(task, args.chains, compile=False, seed=0)
            rows.append(eager_row)
            print(eager_row, flush=True)
        if not args.no_pyro:
            for jit in (False, True):
                rows.append(run_pyro(task, jit, seed=0))
                print(rows[-1], flush=True)
        np_row = run_numpyro(task, args.chains, seed=0)
        if np_row is not None:
            rows.append(np_row)
            print(np_row, flush=True)
        else:
            print("numpyro not importable: NumPyro column skipped", flush=True)
        text = report(task, floor1, floor_c, args.chains, rows, bayes_row)
        print(text, flush=True)
        out.append(text)
    if args.sghmc_steps:
        steps = max(200, int(args.sghmc_steps * scale))
        text = sghmc_section(args.chains, steps)
        print(text, flush=True)
        out.append(text)
    out.append(f"- load average (end): {' '.join(f'{x:.2f}' for x in os.getloadavg())}")
    if torch.cuda.is_available():
        out.append(gpu_section())
    else:
        out.append("\nGPU (1, 64, 1024 vectorized chains of the BNN): no CUDA device on this machine; "
                   "the GPU section runs by itself when `python benchmarks/mcmc.py` finds CUDA.")
    if args.out:
        with open(args.out, "w") as fh:
            fh.write("\n".join(out) + "\n")


def sghmc_section(chains: int = 4, steps: int = 4000, batch_size: int = 32, reps: int = 500) -> str:
    """SGHMC time per step vs the bare minibatch value-and-gradient (overhead ratio R).

    Model: the functional-prior paper's BNN (10 -> 100 -> 1, tanh, fixed noise variance 0.1)
    on diabetes (N = 442), float32, ``chains`` vectorized chains, minibatches of
    ``batch_size``. The floor is the faster of (a) a hand-written batched torch log density
    with autograd on per-chain minibatch rows and (b) bayesact's captured minibatch gradient;
    both include drawing the rows. R = SGHMC seconds per step / floor. Also times
    ``bayesact.models.BNN`` (same architecture) when it is importable. Callable from other
    benchmark scripts (``from mcmc import sghmc_section``).
    """
    x, y = diabetes()
    n = x.shape[0]
    bare, dim = sghmc_bnn_bare_potential(x, y, n)
    gen = torch.Generator().manual_seed(0)
    z = torch.randn(chains, dim) * 0.1

    def bare_vg(z: torch.Tensor):
        rows = torch.rand(chains, n, generator=gen).topk(batch_size, dim=-1, sorted=False).indices
        zz = z.detach().requires_grad_(True)
        u = bare(zz, rows)
        (g,) = torch.autograd.grad(u.sum(), zz)
        return u, g

    mb = MinibatchPotential(sghmc_bnn_model, (x, y), {}, batch_size, chains, torch.float32,
                            torch.device("cpu"))

    def captured_vg(z: torch.Tensor):
        return mb.value_and_grad(z, mb.draw_indices(gen))

    floors = {
        "bare torch autograd": timeit(bare_vg, z, reps),
        f"bayesact {mb.mode} gradient": timeit(captured_vg, z, reps),
    }
    floor = min(floors.values())
    burnin, samples = steps // 2, 10
    thinning = max(1, (steps - burnin) // samples)
    runs = [("plain Pyro model", sghmc_bnn_model)]
    try:
        from bayesact.models import BNN

        runs.append(("bayesact.models.BNN", BNN(x.shape[1], hidden=(100,), noise_std=0.1**0.5)))
    except Exception as exc:  # the models layer is optional here
        print(f"bayesact.models.BNN not usable ({exc!r}): row skipped", flush=True)
    lines = ["", f"### SGHMC: BNN 10-100-1 (tanh) on diabetes, batch {batch_size}, {chains} chains", "",
             "| implementation | ms per step | R = step / floor | gradient mode | minibatch |",
             "|---|---:|---:|---|---|"]
    for name, secs in floors.items():
        lines.append(f"| floor: {name} | {secs * 1e3:.3f} | | | |")
    for name, model in runs:
        with warnings.catch_warnings():
            warnings.simplefilter("ignore")
            post = sghmc(model, x, y, num_chains=chains, num_burnin=burnin, num_samples=samples,
                         thinning=thinning, batch_size=batch_size, seed=0, progress=False)
        secs = (post.info["burnin_seconds"] + post.info["sampling_seconds"]) / post.info["steps_done"]
        lines.append(f"| sghmc, {name} | {secs * 1e3:.3f} | {secs / floor:.2f} | "
                     f"{post.info['potential_mode']} | {post.info['minibatch']} |")
    lines.append(f"\n{steps} steps per chain (burn-in {burnin}); floor = fastest row marked floor.")
    return "\n".join(lines)


def gpu_section() -> str:
    """Wall time per draw per chain for 1, 64 and 1024 vectorized BNN chains on CUDA."""
    x, y = diabetes()
    lines = ["", "### GPU: BNN, vectorized chains", "", "| chains | sampling (s) | ms per draw per chain |",
             "|---:|---:|---:|"]
    for chains in (1, 64, 1024):
        with warnings.catch_warnings():
            warnings.simplefilter("ignore")
            post = mcmc(bnn_model, x.cuda(), y.cuda(), num_chains=chains, num_warmup=100,
                        num_samples=100, max_tree_depth=6, seed=0, progress=False)
        s = post.info["sampling_seconds"]
        lines.append(f"| {chains} | {s:.2f} | {s / (100 * chains) * 1e3:.4f} |")
    return "\n".join(lines)


if __name__ == "__main__":
    main()
