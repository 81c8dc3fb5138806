"""Compiled packages of the NUTS steps (bayesact.compile_packages, bayesact.infer.packaged):
built by a detached worker, loaded by a later process without Inductor, checked before use;
damaged packages and packages that disagree with eager are ignored with a warning."""

from __future__ import annotations

import io
import json
import os
import subprocess
import sys
import textwrap
import time
import warnings
from pathlib import Path

import pytest
import torch

from bayesact import compilation, compile_packages
from bayesact.infer import mcmc, packaged, sampler

from .test_compile_policy import POST_MEAN, POST_SD, Y, _conjugate


@pytest.fixture
def package_cache(monkeypatch: pytest.MonkeyPatch, tmp_path: Path) -> Path:
    """Packages on, in a fresh private cache directory."""
    monkeypatch.setenv("BAYESACT_PACKAGES", "1")
    monkeypatch.setenv(compilation.CACHE_ENV_VAR, str(tmp_path))
    monkeypatch.setattr(compilation, "_cache_dir", None)
    compile_packages._package_paths.cache_clear()
    yield tmp_path
    compile_packages._package_paths.cache_clear()


_SECOND_PROCESS = textwrap.dedent(
    """
    import json, sys
    import pyro, pyro.distributions as dist, torch
    from bayesact.infer import mcmc

    def model(y):
        mu = pyro.sample("mu", dist.Normal(torch.zeros((), dtype=y.dtype), 1.0))
        with pyro.plate("data", y.shape[0]):
            pyro.sample("y", dist.Normal(mu, 1.0), obs=y)

    y = torch.tensor(json.loads(sys.argv[1]), dtype=torch.float64)
    post = mcmc(model, y, num_chains=2, num_warmup=200, num_samples=600, seed=1, progress=False)
    mu = post.samples["mu"]
    print(json.dumps({"package": post.info["compiled_package"], "mean": float(mu.mean()),
                      "sd": float(mu.std()), "inductor": "torch._inductor.compile_fx" in sys.modules}))
    """
)


def test_a_long_run_switches_to_its_package_and_a_second_process_loads_it_without_inductor(
    package_cache: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    """A run projected over AUTO_PACKAGE_EARLY_SECONDS (here 0) starts the detached build at
    once and switches to the package at the first iteration after it is built (the build is
    awaited here, so that is the next one); a new process then samples with the package from
    its first iteration, never importing Inductor's compiler, and its draws are from the
    conjugate posterior N(Σy/(n+1), 1/(n+1)) (1200 draws: the mean within 5 Monte Carlo
    standard errors at an ESS of a quarter of the draws, the sd within 15 %)."""
    monkeypatch.setattr(sampler, "AUTO_PACKAGE_EARLY_SECONDS", 0.0)
    monkeypatch.setattr(sampler, "AUTO_MIN_SECONDS", 1e9)  # no in-process compile
    packages = package_cache / "packages"
    start = sampler._Run._start_package_build

    def start_and_wait(run: sampler._Run) -> bool:
        started = start(run)
        deadline = time.monotonic() + 300
        while list(packages.glob("*.lock")) and time.monotonic() < deadline:
            time.sleep(0.5)
        return started

    monkeypatch.setattr(sampler._Run, "_start_package_build", start_and_wait)
    first = mcmc(_conjugate, Y, num_chains=2, num_warmup=20, num_samples=20, seed=0, progress=False)
    built = list(packages.glob("*.pt2"))
    logs = "\n".join(p.read_text() for p in packages.glob("*.log"))
    assert len(built) == 1, f"no package was built; worker log:\n{logs}"
    assert first.info["compiled_package"] is True
    assert first.info["compiled_from_iteration"] == sampler.AUTO_PROBE_ITERATIONS + 1
    record = json.loads(built[0].with_suffix(".json").read_text())
    assert set(record) >= {"sha256", "seconds", "torch"}
    assert not list(packages.glob("build-*")), "the worker must remove its input folder"

    env = {**os.environ, "BAYESACT_PACKAGES": "1", compilation.CACHE_ENV_VAR: str(package_cache)}
    done = subprocess.run([sys.executable, "-c", _SECOND_PROCESS, json.dumps(Y.tolist())], env=env,
                          capture_output=True, text=True, check=False, timeout=300)
    assert done.returncode == 0, done.stderr[-3000:]
    out = json.loads(done.stdout.strip().splitlines()[-1])
    assert out["package"] is True
    assert out["inductor"] is False
    assert abs(out["mean"] - POST_MEAN) < 5 * POST_SD / 1200**0.5 * 2  # ESS ≥ draws / 4
    assert abs(out["sd"] / POST_SD - 1) < 0.15


@pytest.mark.parametrize("compile_arg", ["auto", False])
def test_a_short_run_starts_its_package_build_only_when_it_ends(
    package_cache: Path, monkeypatch: pytest.MonkeyPatch, compile_arg: object
) -> None:
    """Under AUTO_PACKAGE_EARLY_SECONDS the build is started after the last iteration (it
    never competes with the run's sampling); compile=False never builds one."""
    monkeypatch.setattr(sampler, "AUTO_PACKAGE_MIN_SECONDS", 0.0)
    monkeypatch.setattr(sampler, "AUTO_PACKAGE_EARLY_SECONDS", 1e9)
    started_at: list[int] = []

    def record(run: sampler._Run) -> bool:
        started_at.append(run.state.iteration)
        return False

    monkeypatch.setattr(sampler._Run, "_start_package_build", record)
    mcmc(_conjugate, Y, num_chains=2, num_warmup=15, num_samples=15, seed=0, progress=False,
         compile=compile_arg)
    assert started_at == ([30] if compile_arg == "auto" else [])




def test_a_damaged_package_is_ignored_with_a_warning_and_never_loaded(
    package_cache: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    """Bytes that do not match the record's SHA-256 never reach the loader; a package that
    matches but does not load is ignored too; each with a CompileFallbackWarning."""
    calls: list[str] = []

    class Loader:
        def __init__(self, path: str, *args: object) -> None:
            calls.append(path)
            raise RuntimeError("not a package")

    monkeypatch.setattr(torch._C._aoti, "AOTIModelPackageLoader", Loader)
    paths = compile_packages.package_paths("damaged")
    paths.package.write_bytes(b"\x7fELF not really a package")
    paths.record.write_text(json.dumps({"sha256": "0" * 64}))
    with pytest.warns(compilation.CompileFallbackWarning, match="SHA-256"):
        assert compile_packages.load("damaged") is None
    assert calls == []  # never handed to the loader
    paths.record.write_text(json.dumps({"sha256": compile_packages._sha256(paths.package)}))
    with pytest.warns(compilation.CompileFallbackWarning, match="not a package"):
        assert compile_packages.load("damaged") is None
    paths.record.write_text("{not json")
    with pytest.warns(compilation.CompileFallbackWarning):
        assert compile_packages.load("damaged") is None
    assert compile_packages.load("absent") is None  # no package: no warning (pytest would fail on one)


def test_a_package_that_disagrees_with_eager_is_not_used(
    package_cache: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    """load_nuts_kernels checks the package against the eager pair step at the run's own state:
    a package returning wrong numbers is refused with a warning and the run samples correctly."""
    seen: list[int] = []

    def fake_load(key: str):
        def run(flat: list[torch.Tensor]) -> list[torch.Tensor]:  # the input subtree, shifted by 1
            seen.append(len(flat))
            return [t + 1 if t.is_floating_point() else t for t in flat]
        return run

    monkeypatch.setattr(compile_packages, "load", fake_load)
    with warnings.catch_warnings(record=True) as record:
        warnings.simplefilter("always")
        post = mcmc(_conjugate, Y, num_chains=2, num_warmup=100, num_samples=300, seed=0, progress=False,
                    compile=True)
    assert seen, "the package must have been tried"
    assert any("disagrees with the eager step" in str(w.message) for w in record)
    assert not post.info["compiled_package"]
    mu = post.samples["mu"]
    assert abs(float(mu.mean()) - POST_MEAN) < 5 * POST_SD / 600**0.5 * 2


def test_the_shipped_gradient_graph_computes_what_the_captured_one_does() -> None:
    """build_files ships the captured gradient graph as code and constant tensors; the worker's
    rebuild of it gives the same potential and gradient (float64, exactly)."""
    from bayesact.infer.potential import build_potential

    potential = build_potential(_conjugate, (Y,), {}, dtype=torch.float64, device=torch.device("cpu"),
                                num_chains=3)
    graph = potential.graph
    assert isinstance(graph, torch.fx.GraphModule)
    z = torch.tensor([[0.1], [-0.4], [1.3]], dtype=torch.float64)
    state = {"z": z, "potential": z[:, 0], "grad": z, "step_size": z[:, 0].abs(),
             "inverse_mass": torch.ones_like(z)}
    files = packaged.build_files(graph, state, 6, 1000.0)
    assert files is not None
    meta = json.loads(files["graph.json"])
    tensors = torch.load(io.BytesIO(files["tensors.pt"]), weights_only=True)
    rebuilt = packaged.rebuild_gradient(meta, tensors["constants"])
    for got, want in zip(rebuilt(z), graph(z), strict=True):
        assert torch.equal(got, want)


def test_one_build_at_a_time_and_a_stale_lock_is_taken_over(package_cache: Path) -> None:
    paths = compile_packages.package_paths("locked")
    paths.lock.write_text("")
    assert compile_packages.building("locked")
    assert not compile_packages.start_build("locked", "bayesact.infer.package_worker", {})
    assert not compile_packages.start_build("other", "bayesact.infer.package_worker", {})  # one at a time
    old = time.time() - compile_packages.BUILD_TIMEOUT_SECONDS - 10
    os.utime(paths.lock, (old, old))
    assert not compile_packages.building("locked")
    # a worker given an empty spec fails at once, and still removes its lock and input folder
    assert compile_packages.start_build("locked", "bayesact.infer.package_worker", {})
    deadline = time.monotonic() + 120
    while paths.lock.exists() and time.monotonic() < deadline:
        time.sleep(0.5)
    assert not paths.lock.exists() and not paths.package.exists()
    assert not list(paths.lock.parent.glob("build-*"))
    # the failure is noted: no later run starts the same failing build, and loading says nothing
    assert "failed" in json.loads(paths.record.read_text())
    assert not compile_packages.start_build("locked", "bayesact.infer.package_worker", {})
    with warnings.catch_warnings():
        warnings.simplefilter("error")
        assert compile_packages.load("locked") is None
