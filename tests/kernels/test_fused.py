"""The fused (torch.compile) recursion equals the eager one, on CPU and CUDA."""

from __future__ import annotations

import pytest
import torch

from bayesact import kernels as K

from ._helpers import inputs


def _compare(name: str, depth: int, device: str = "cpu", grads: bool = False) -> None:
    x1, x2 = (x.to(device) for x in inputs(n=9, m=7))
    w = torch.tensor(1.3, dtype=torch.float64, device=device, requires_grad=grads)
    kw = {"activation": name, "depth": depth, "weight_std": w, "bias_std": 0.2}
    eager = K.nngp_ntk(x1, x2, **kw)
    fused = K.nngp_ntk(x1, x2, fused=True, **kw)
    for a, b in zip(fused, eager, strict=True):
        torch.testing.assert_close(a, b, rtol=1e-12, atol=1e-14)
    if grads:
        g_eager = torch.autograd.grad(sum(t.sum() for t in eager), w)
        g_fused = torch.autograd.grad(sum(t.sum() for t in fused), w)
        torch.testing.assert_close(g_fused, g_eager, rtol=1e-10, atol=1e-12)


def test_fused_matches_eager_smoke() -> None:
    _compare("erf", 1)


def test_fused_blocks_are_identical_to_one_block() -> None:
    """Every block runs the same compiled (dynamic-shape) kernel on its rows of the one Gram matrix."""
    x1, x2 = inputs(n=9, m=7)
    kw = {"activation": "erf", "depth": 1, "weight_std": 1.3, "bias_std": 0.2, "fused": True}
    one = K.nngp_ntk(x1, x2, **kw)
    blocked = K.nngp_ntk(x1, x2, block_bytes=7 * 8 * 18 * 3, **kw)  # three blocks of three rows
    for a, b in zip(blocked, one, strict=True):
        assert torch.equal(a, b)


@pytest.mark.slow
@pytest.mark.parametrize("name", ["relu", "gelu", "tanh", "snake"])
def test_fused_matches_eager(name: str) -> None:
    _compare(name, 3, grads=True)


@pytest.mark.gpu
@pytest.mark.parametrize("name", ["relu", "erf", "tanh"])
def test_fused_on_cuda_matches_cpu(name: str) -> None:
    x1, x2 = inputs(n=64, m=48)
    kw = {"activation": name, "depth": 3, "weight_std": 1.3, "bias_std": 0.2}
    cpu = K.nngp_ntk(x1, x2, **kw)
    cuda = K.nngp_ntk(x1.cuda(), x2.cuda(), fused=True, **kw)
    for a, b in zip(cuda, cpu, strict=True):
        torch.testing.assert_close(a.cpu(), b, rtol=1e-10, atol=1e-12)


# -- the compile policy (bayesact.compilation) ----------------------------------------------------


@pytest.fixture
def fresh_kernels(monkeypatch: pytest.MonkeyPatch) -> dict:
    """An empty cache of compiled layer recursions (each test builds its own)."""
    from bayesact.kernels import recursion

    cache: dict = {}
    monkeypatch.setattr(recursion, "_compiled_layers", cache)
    return cache


def _erf(**extra) -> tuple[torch.Tensor, torch.Tensor]:
    x1, x2 = inputs(n=9, m=7)
    return K.nngp_ntk(x1, x2, activation="erf", depth=2, weight_std=1.3, bias_std=0.2, **extra)


def test_fused_must_be_true_false_or_auto() -> None:
    with pytest.raises(ValueError, match="fused must be True, False or 'auto'"):
        _erf(fused="yes")


def test_bayesact_compile_0_runs_the_kernels_uncompiled(monkeypatch: pytest.MonkeyPatch,
                                                         fresh_kernels) -> None:
    from bayesact import compilation

    def must_not_compile(*args, **kwargs):
        raise AssertionError("BAYESACT_COMPILE=0 must not compile")

    monkeypatch.setenv(compilation.ENV_VAR, "0")
    monkeypatch.setattr(torch, "compile", must_not_compile)
    eager = _erf(fused=False)
    from bayesact.kernels import recursion

    monkeypatch.setattr(recursion, "AUTO_MIN_ENTRIES", 1)
    monkeypatch.setattr(recursion, "AUTO_MIN_EAGER_SECONDS", 0.0)
    for policy in (True, "auto"):
        for _ in range(4):  # "auto" would start compiling at its third call
            assert all(torch.equal(a, b) for a, b in zip(_erf(fused=policy), eager, strict=True))
    assert all(c.state == "new" for c in fresh_kernels.values())


def test_a_kernel_compile_failure_falls_back_with_one_warning(monkeypatch: pytest.MonkeyPatch,
                                                              fresh_kernels) -> None:
    import uuid

    from bayesact import compilation

    reason = f"no inductor today {uuid.uuid4().hex}"

    def broken(*args, **kwargs):
        raise RuntimeError(reason)

    monkeypatch.setattr(torch, "compile", broken)
    eager = _erf(fused=False)
    with pytest.warns(compilation.CompileFallbackWarning, match=reason) as record:
        for _ in range(3):  # warned once, the eager numbers every time
            assert all(torch.equal(a, b) for a, b in zip(_erf(fused=True), eager, strict=True))
    assert len([w for w in record if reason in str(w.message)]) == 1


def test_fused_auto_never_compiles_a_small_kernel(monkeypatch: pytest.MonkeyPatch, fresh_kernels) -> None:
    def must_not_compile(*args, **kwargs):
        raise AssertionError("a small kernel must not compile")

    monkeypatch.setattr(torch, "compile", must_not_compile)
    eager = _erf()  # 63 entries, below AUTO_MIN_ENTRIES
    for _ in range(5):
        assert all(torch.equal(a, b) for a, b in zip(_erf(fused="auto"), eager, strict=True))
    assert not fresh_kernels


def test_fused_auto_runs_eagerly_then_switches_to_the_verified_kernel(monkeypatch: pytest.MonkeyPatch,
                                                                      fresh_kernels) -> None:
    from bayesact.kernels import recursion

    monkeypatch.setattr(recursion, "AUTO_MIN_ENTRIES", 1)  # small inputs keep the test fast
    monkeypatch.setattr(recursion, "AUTO_MIN_EAGER_SECONDS", 0.0)
    eager = _erf(fused=False)
    for _ in range(2):  # the first calls run eagerly (bit for bit) and start no compile
        assert all(torch.equal(a, b) for a, b in zip(_erf(fused="auto"), eager, strict=True))
        assert [c.state for c in fresh_kernels.values()] == ["new"]
    # the third starts the background build (loading Inductor can move eager results by an ulp)
    for a, b in zip(_erf(fused="auto"), eager, strict=True):
        torch.testing.assert_close(a, b, rtol=1e-12, atol=1e-14)
    (kernel,) = fresh_kernels.values()
    assert kernel.wait(timeout=600) == "ready"
    for a, b in zip(_erf(fused="auto"), eager, strict=True):  # the compiled kernel
        torch.testing.assert_close(a, b, rtol=1e-12, atol=1e-14)


def test_first_fused_call_with_gradient_over_checkpointed_blocks(fresh_kernels) -> None:
    """The first fused call compiles and verifies outside the checkpointed blocks, so autograd's
    recomputation of each block saves the same tensors as its forward (and checkpointing's early stop
    is not mistaken for a compile failure): gradient equal to eager's, no fallback warning."""
    import warnings

    from bayesact.compilation import CompileFallbackWarning

    x1, x2 = inputs(n=9, m=7)
    kw = {"activation": "erf", "depth": 2, "bias_std": 0.2, "block_bytes": 7 * 8 * 18 * 3}
    w_eager = torch.tensor(1.3, dtype=torch.float64, requires_grad=True)
    w_fused = torch.tensor(1.3, dtype=torch.float64, requires_grad=True)
    eager = K.nngp_ntk(x1, x2, weight_std=w_eager, **kw)
    with warnings.catch_warnings():
        warnings.simplefilter("error", CompileFallbackWarning)
        warnings.simplefilter("error", UserWarning)
        fused = K.nngp_ntk(x1, x2, weight_std=w_fused, fused=True, **kw)
        (g_fused,) = torch.autograd.grad(sum(t.sum() for t in fused), w_fused)
    (g_eager,) = torch.autograd.grad(sum(t.sum() for t in eager), w_eager)
    for a, b in zip(fused, eager, strict=True):
        torch.testing.assert_close(a, b, rtol=1e-12, atol=1e-14)
    torch.testing.assert_close(g_fused, g_eager, rtol=1e-10, atol=1e-12)


def test_fused_auto_is_the_default_of_the_functions_and_the_gpytorch_kernels() -> None:
    import inspect

    for api in (K.nngp, K.ntk, K.nngp_ntk, K.NNGPKernel, K.NTKKernel):
        assert inspect.signature(api).parameters["fused"].default == "auto", api


def test_fused_auto_never_compiles_a_second_configuration_on_the_callers_thread(
    monkeypatch: pytest.MonkeyPatch, fresh_kernels
) -> None:
    """Once one configuration's kernel is ready, another configuration (here relu after erf) runs
    eagerly on the caller's thread: no graph is built there (a guard failure would otherwise compile,
    unverified, while the caller waits); it gets its own verified background build later."""
    from torch._dynamo.utils import counters

    from bayesact.kernels import recursion

    monkeypatch.setattr(recursion, "AUTO_MIN_ENTRIES", 1)
    monkeypatch.setattr(recursion, "AUTO_MIN_EAGER_SECONDS", 0.0)
    for _ in range(3):
        _erf(fused="auto")
    (erf_kernel,) = fresh_kernels.values()
    assert erf_kernel.wait(timeout=600) == "ready"
    x1, x2 = inputs(n=9, m=7)
    kw = {"activation": "relu", "depth": 2, "weight_std": 1.3, "bias_std": 0.2}
    eager = K.nngp_ntk(x1, x2, fused=False, **kw)
    graphs = counters["stats"]["unique_graphs"]
    for _ in range(2):  # below the third call, which would start relu's own background build
        got = K.nngp_ntk(x1, x2, fused="auto", **kw)
        assert all(torch.equal(a, b) for a, b in zip(got, eager, strict=True))
    assert counters["stats"]["unique_graphs"] == graphs
    assert len(fresh_kernels) == 2 and all(c.state in ("ready", "new") for c in fresh_kernels.values())


def test_the_interpreter_exits_cleanly_during_a_background_compile(tmp_path) -> None:
    """A script that ends while fused="auto" is compiling in the background exits with status 0
    (a daemon thread killed inside Inductor's C++ code used to abort the process, status 134)."""
    import subprocess
    import sys

    script = (
        "import torch\n"
        "from bayesact.kernels import nngp, recursion\n"
        "recursion.AUTO_MIN_ENTRIES = 1\n"
        "recursion.AUTO_MIN_EAGER_SECONDS = 0.0\n"
        "x = torch.randn(20, 3, dtype=torch.float64)\n"
        "for _ in range(3):\n"
        "    nngp(x, activation='erf', depth=2)\n"
        "(kernel,) = recursion._compiled_layers.values()\n"
        "assert kernel.state == 'building', kernel.state\n"
    )
    env = {**__import__("os").environ, "BAYESACT_CACHE_DIR": str(tmp_path)}
    done = subprocess.run([sys.executable, "-c", script], capture_output=True, text=True, env=env,
                          timeout=300, check=False)
    assert done.returncode == 0, done.stderr[-2000:]


@pytest.mark.parametrize("name", ["relu2", "polyrelu", "leaky_relu", "snake"])
def test_fused_auto_counts_the_calls_of_one_configuration_as_one(name: str, monkeypatch: pytest.MonkeyPatch,
                                                                 fresh_kernels) -> None:
    """Each call builds a new dual object from the activation's parameters; calls with equal
    parameters share one compiled recursion (so the third one starts its build), whatever
    containers (dicts of coefficients, tuples, tensors) the dual holds them in."""
    from bayesact.kernels import recursion

    def must_not_compile(*args, **kwargs):
        raise AssertionError("the first two calls must not compile")

    monkeypatch.setattr(recursion, "AUTO_MIN_ENTRIES", 1)
    monkeypatch.setattr(recursion, "AUTO_MIN_EAGER_SECONDS", 0.0)
    monkeypatch.setattr(torch, "compile", must_not_compile)
    x1, x2 = inputs(n=9, m=7)
    for _ in range(2):
        K.nngp(x1, x2, activation=name, depth=2, fused="auto")
    assert len(fresh_kernels) == 1


def test_fused_auto_starts_no_compile_before_the_eager_calls_took_their_time(monkeypatch: pytest.MonkeyPatch,
                                                                             fresh_kernels) -> None:
    """A configuration compiles only after its eager calls took AUTO_MIN_EAGER_SECONDS in all: a short
    run never starts a compile that competes with it for the CPU (here: never, with a huge bound)."""
    from bayesact.kernels import recursion

    def must_not_compile(*args, **kwargs):
        raise AssertionError("must not compile before the eager calls took their time")

    monkeypatch.setattr(recursion, "AUTO_MIN_ENTRIES", 1)
    monkeypatch.setattr(recursion, "AUTO_MIN_EAGER_SECONDS", 1e9)
    monkeypatch.setattr(torch, "compile", must_not_compile)
    eager = _erf(fused=False)
    for _ in range(5):
        assert all(torch.equal(a, b) for a, b in zip(_erf(fused="auto"), eager, strict=True))
    (kernel,) = fresh_kernels.values()
    assert kernel.state == "new" and kernel.calls == 0
    assert 0 < recursion._eager_seconds[kernel] < 60
