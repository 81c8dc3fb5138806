"""The compile policy: verified compilation, one-warning fallback, the switches, the persistent cache."""

from __future__ import annotations

import json
import os
import stat
import subprocess
import sys
import textwrap
import threading
import warnings
from collections.abc import Callable
from pathlib import Path
from typing import Any

import pytest
import torch

from bayesact import compilation as C


@pytest.fixture(autouse=True)
def _fresh_policy(monkeypatch: pytest.MonkeyPatch) -> None:
    """Each test starts with no warnings given, compilation on, and Inductor's cache untouched."""
    monkeypatch.setattr(C, "_warned", set())
    monkeypatch.setattr(C, "_fallbacks", {})
    monkeypatch.setattr(C, "_user_enabled", True)
    monkeypatch.setattr(C, "_persistent_configured", True)
    monkeypatch.setattr(C, "_cache_dir", None)
    monkeypatch.delenv(C.ENV_VAR, raising=False)


def f(x: torch.Tensor, y: torch.Tensor) -> torch.Tensor:
    return torch.tanh(x) * y + x.exp().sum()


def _fake_compile(make: Callable[[Callable[..., Any]], Callable[..., Any]], log: list[str]):
    """A stand-in for ``torch.compile`` whose compiled function is ``make(fn)``; logs each compile."""
    def fake(fn: Callable[..., Any], **kwargs: Any) -> Callable[..., Any]:
        log.append(threading.current_thread().name)
        return make(fn)

    return fake


def _inputs(dtype: torch.dtype = torch.float32) -> tuple[torch.Tensor, torch.Tensor]:
    gen = torch.Generator().manual_seed(0)
    return torch.randn(64, generator=gen, dtype=dtype), torch.randn(64, generator=gen, dtype=dtype)


def test_a_compile_failure_falls_back_to_eager_with_exactly_one_warning(
    monkeypatch: pytest.MonkeyPatch,
) -> None:
    def broken(fn: Callable[..., Any], **kwargs: Any) -> None:
        raise RuntimeError("no C++ compiler found")

    monkeypatch.setattr(torch, "compile", broken)
    x, y = _inputs()
    first, second = C.compiled(f, name="first"), C.compiled(f, name="second")
    with pytest.warns(C.CompileFallbackWarning, match="no C\\+\\+ compiler found") as record:
        outs = [first(x, y) for _ in range(3)]
    assert len(record) == 1
    with warnings.catch_warnings():
        warnings.simplefilter("error")  # the same reason for another function: no second warning
        outs.append(second(x, y))
    for out in outs:
        torch.testing.assert_close(out, f(x, y), rtol=0, atol=0)
    assert first.state == second.state == "failed"
    assert set(C.fallbacks()) == {"first", "second"}


def test_a_wrong_compiled_result_is_caught_and_never_returned(monkeypatch: pytest.MonkeyPatch) -> None:
    log: list[str] = []
    # off by 1e-3 relative: beyond float32's 1e-4 tolerance
    monkeypatch.setattr(torch, "compile", _fake_compile(lambda fn: lambda *a: fn(*a) * (1 + 1e-3), log))
    x, y = _inputs()
    wrong = C.compiled(f, name="wrong")
    with pytest.warns(C.CompileFallbackWarning, match="differs from eager"):
        out = wrong(x, y)
    torch.testing.assert_close(out, f(x, y), rtol=0, atol=0)
    torch.testing.assert_close(wrong(x, y), f(x, y), rtol=0, atol=0)
    assert wrong.state == "failed" and log == ["MainThread"]


def test_a_correct_compiled_function_is_used(monkeypatch: pytest.MonkeyPatch) -> None:
    calls: list[int] = []

    def make(fn: Callable[..., Any]) -> Callable[..., Any]:
        def compiled_fn(*args: Any) -> Any:
            calls.append(1)
            return fn(*args)

        return compiled_fn

    monkeypatch.setattr(torch, "compile", _fake_compile(make, []))
    x, y = _inputs()
    good = C.compiled(f, name="good")
    with warnings.catch_warnings():
        warnings.simplefilter("error")
        good(x, y)
        good(x, y)
    assert good.state == "ready" and len(calls) == 2  # the verification run (first call), the second call


def test_a_runtime_failure_of_compiled_code_falls_back_once(monkeypatch: pytest.MonkeyPatch) -> None:
    calls: list[int] = []

    def make(fn: Callable[..., Any]) -> Callable[..., Any]:
        def flaky(*args: Any) -> Any:
            calls.append(1)
            if len(calls) > 1:
                raise RuntimeError("kernel launch failed")
            return fn(*args)

        return flaky

    monkeypatch.setattr(torch, "compile", _fake_compile(make, []))
    x, y = _inputs()
    c = C.compiled(f, name="flaky")
    c(x, y)
    with pytest.warns(C.CompileFallbackWarning, match="kernel launch failed") as record:
        outs = [c(x, y), c(x, y)]
    assert len(record) == 1 and c.state == "failed"
    for out in outs:
        torch.testing.assert_close(out, f(x, y), rtol=0, atol=0)


def test_bad_input_raises_the_eager_error_without_falling_back(monkeypatch: pytest.MonkeyPatch) -> None:
    def make(fn: Callable[..., Any]) -> Callable[..., Any]:
        def failing(*args: Any) -> Any:
            raise RuntimeError("compiled function failed")

        return failing

    monkeypatch.setattr(torch, "compile", _fake_compile(make, []))
    c = C.compiled(f, name="shapes")
    with warnings.catch_warnings():
        warnings.simplefilter("error")
        with pytest.raises(RuntimeError, match="size of tensor a"):
            c(torch.randn(3), torch.randn(4))
    assert c.state == "new" and C.fallbacks() == {}


@pytest.mark.parametrize("value", ["0", "false", "OFF", "no"])
def test_the_environment_variable_turns_compilation_off(monkeypatch: pytest.MonkeyPatch, value: str) -> None:
    log: list[str] = []
    monkeypatch.setattr(torch, "compile", _fake_compile(lambda fn: fn, log))
    monkeypatch.setenv(C.ENV_VAR, value)
    x, y = _inputs()
    c = C.compiled(f, name="env")
    torch.testing.assert_close(c(x, y), f(x, y), rtol=0, atol=0)
    assert log == [] and not C.is_enabled() and c.state == "new"
    monkeypatch.setenv(C.ENV_VAR, "1")
    c(x, y)
    assert log == ["MainThread"] and c.state == "ready"


def test_the_user_switch_turns_compilation_off_and_back(monkeypatch: pytest.MonkeyPatch) -> None:
    calls: list[int] = []

    def make(fn: Callable[..., Any]) -> Callable[..., Any]:
        return lambda *a: (calls.append(1), fn(*a))[1]

    monkeypatch.setattr(torch, "compile", _fake_compile(make, []))
    x, y = _inputs()
    c = C.compiled(f, name="switch")
    with C.disabled():
        assert not C.is_enabled()
        c(x, y)
    assert calls == [] and C.is_enabled()
    c(x, y)  # compiles, verifies (one compiled run)
    assert len(calls) == 1
    assert C.set_enabled(False) is True
    c(x, y)  # compiled already, but off: eager
    assert len(calls) == 1
    C.set_enabled(True)
    c(x, y)
    assert len(calls) == 2
    with pytest.raises(TypeError, match="flag must be a bool"):
        C.set_enabled(0)  # type: ignore[arg-type]


def test_auto_compiles_in_the_background_and_never_makes_a_call_wait(monkeypatch: pytest.MonkeyPatch) -> None:
    log: list[str] = []
    release = threading.Event()
    compiled_calls: list[int] = []

    def make(fn: Callable[..., Any]) -> Callable[..., Any]:
        release.wait(10)  # a slow compile: calls meanwhile must run eagerly

        def run(*args: Any) -> Any:
            compiled_calls.append(1)
            return fn(*args)

        return run

    monkeypatch.setattr(torch, "compile", _fake_compile(make, log))
    x, y = _inputs()
    c = C.compiled(f, name="auto", policy="auto", min_calls=2)
    c(x, y)
    assert log == [] and c.state == "new"
    for _ in range(3):  # the second call starts the build; none of them waits for it
        torch.testing.assert_close(c(x, y), f(x, y), rtol=0, atol=0)
    assert c.state == "building" and compiled_calls == []
    release.set()
    assert c.wait(10) == "ready"
    assert log == ["bayesact-compile-auto"]
    c(x, y)
    assert compiled_calls == [1, 1]  # the verification run, then the call


def test_auto_reports_a_background_failure_once_from_the_callers_thread(
    monkeypatch: pytest.MonkeyPatch,
) -> None:
    def broken(fn: Callable[..., Any], **kwargs: Any) -> None:
        raise RuntimeError("inductor crashed")

    monkeypatch.setattr(torch, "compile", broken)
    x, y = _inputs()
    c = C.compiled(f, name="auto-broken", policy="auto", min_calls=1)
    c(x, y)
    assert c.wait(10) == "failed"
    with pytest.warns(C.CompileFallbackWarning, match="inductor crashed") as record:
        out = c(x, y)
        c(x, y)
    assert len(record) == 1
    torch.testing.assert_close(out, f(x, y), rtol=0, atol=0)


def test_outputs_close_uses_the_tolerance_of_the_dtype() -> None:
    for dtype, ok, bad in ((torch.float32, 3e-5, 3e-4), (torch.float64, 1e-11, 1e-8)):
        ref = torch.linspace(-2, 2, 50, dtype=dtype)
        assert C.outputs_close((ref * (1 + ok), ref.sum()), (ref, ref.sum()))
        assert not C.outputs_close(ref * (1 + bad), ref)
    ref = torch.tensor([1.0, float("nan"), float("inf")])
    assert C.outputs_close(ref.clone(), ref)
    assert not C.outputs_close(torch.tensor([1.0, 0.0, float("inf")]), ref)  # NaN moved
    assert not C.outputs_close(torch.tensor([1, 2]), torch.tensor([1, 3]))  # integers exact
    assert not C.outputs_close((ref,), (ref, ref))  # structure
    assert not C.outputs_close(ref.double(), ref)  # dtype


def test_bad_arguments_name_the_argument() -> None:
    with pytest.raises(ValueError, match="policy must be"):
        C.compiled(f, name="x", policy="sometimes")  # type: ignore[arg-type]
    with pytest.raises(ValueError, match="name must be"):
        C.compiled(f, name="")
    with pytest.raises(ValueError, match="min_calls must be"):
        C.compiled(f, name="x", min_calls=0)
    with pytest.raises(TypeError, match="fn must be callable"):
        C.compiled(3, name="x")  # type: ignore[arg-type]


# -- the cache directory ------------------------------------------------------------------------


def test_the_cache_directory_is_created_private(monkeypatch: pytest.MonkeyPatch, tmp_path: Path) -> None:
    monkeypatch.setenv(C.CACHE_ENV_VAR, str(tmp_path / "new" / "cache"))
    with warnings.catch_warnings():
        warnings.simplefilter("error")
        path = C.cache_dir()
    assert path == tmp_path / "new" / "cache"
    assert stat.S_IMODE(os.stat(path).st_mode) == 0o700


def test_the_default_cache_directory_follows_xdg(monkeypatch: pytest.MonkeyPatch, tmp_path: Path) -> None:
    monkeypatch.delenv(C.CACHE_ENV_VAR, raising=False)
    monkeypatch.setenv("XDG_CACHE_HOME", str(tmp_path))
    assert C.cache_dir() == tmp_path / "bayesact"


def _assert_refused(path: Path, match: str) -> None:
    with pytest.warns(C.CacheDirWarning, match=match):
        used = C.cache_dir()
    assert used != path and used.is_dir()
    info = os.stat(used)
    assert stat.S_IMODE(info.st_mode) == 0o700 and info.st_uid == os.geteuid()  # (getuid may be patched)
    assert list(used.iterdir()) == []  # fresh: nothing in it was written by anyone else


def test_a_world_writable_cache_directory_is_refused(monkeypatch: pytest.MonkeyPatch, tmp_path: Path) -> None:
    shared = tmp_path / "shared"
    shared.mkdir()
    shared.chmod(0o777)
    (shared / "inductor").mkdir()
    monkeypatch.setenv(C.CACHE_ENV_VAR, str(shared))
    _assert_refused(shared, "writable by others")


def test_a_foreign_owned_cache_directory_is_refused(monkeypatch: pytest.MonkeyPatch, tmp_path: Path) -> None:
    own = tmp_path / "theirs"
    own.mkdir(mode=0o700)
    monkeypatch.setenv(C.CACHE_ENV_VAR, str(own))
    monkeypatch.setattr(os, "getuid", lambda: os.stat(own).st_uid + 1)  # we are someone else
    _assert_refused(own, "owned by uid")


def test_a_symlinked_cache_directory_is_refused(monkeypatch: pytest.MonkeyPatch, tmp_path: Path) -> None:
    target = tmp_path / "target"
    target.mkdir(mode=0o700)
    link = tmp_path / "link"
    link.symlink_to(target)
    monkeypatch.setenv(C.CACHE_ENV_VAR, str(link))
    _assert_refused(link, "symbolic link")


def test_inductor_is_pointed_at_the_cache_unless_the_user_chose_a_directory(
    monkeypatch: pytest.MonkeyPatch, tmp_path: Path
) -> None:
    from torch._inductor.runtime.cache_dir_utils import default_cache_dir

    monkeypatch.setenv(C.CACHE_ENV_VAR, str(tmp_path / "ours"))
    monkeypatch.setattr(C, "_persistent_configured", False)
    monkeypatch.setattr(C, "_inductor_dir_at_import", default_cache_dir())  # torch's own default
    monkeypatch.setenv("TORCHINDUCTOR_CACHE_DIR", default_cache_dir())
    assert C.use_persistent_cache() == str(tmp_path / "ours" / "inductor")
    assert os.environ["TORCHINDUCTOR_CACHE_DIR"] == str(tmp_path / "ours" / "inductor")

    monkeypatch.setattr(C, "_persistent_configured", False)
    monkeypatch.setattr(C, "_inductor_dir_at_import", str(tmp_path / "mine"))  # the user's choice
    monkeypatch.setenv("TORCHINDUCTOR_CACHE_DIR", str(tmp_path / "mine"))
    assert C.use_persistent_cache() == str(tmp_path / "mine")


# -- a real compile, across processes -----------------------------------------------------------

_CHILD = textwrap.dedent(
    """
    import json, os, sys, torch
    from bayesact import compilation as C

    def f(x, y):
        return torch.tanh(x) * y + torch.sigmoid(x).sum()

    out = {}
    for dtype in (torch.float32, torch.float64):
        gen = torch.Generator().manual_seed(0)
        x, y = torch.randn(300, generator=gen, dtype=dtype), torch.randn(300, generator=gen, dtype=dtype)
        c = C.compiled(f, name="child_" + str(dtype))
        got = c(x, y)
        assert c.state == "ready", c.fallback_reason
        torch.testing.assert_close(got, f(x, y))
        out[str(dtype)] = c.compile_seconds
    from torch._dynamo.utils import counters
    out["counters"] = dict(counters["inductor"])
    out["inductor_dir"] = os.environ["TORCHINDUCTOR_CACHE_DIR"]
    print(json.dumps(out))
    """
)


def _child(cache: Path) -> tuple[dict[str, Any], str]:
    env = {k: v for k, v in os.environ.items() if k not in ("TORCHINDUCTOR_CACHE_DIR", C.ENV_VAR)}
    env[C.CACHE_ENV_VAR] = str(cache)
    done = subprocess.run([sys.executable, "-c", _CHILD], env=env, capture_output=True, text=True,
                          timeout=600, check=False)
    assert done.returncode == 0, done.stderr[-3000:]
    return json.loads(done.stdout.strip().splitlines()[-1]), done.stderr


@pytest.mark.slow
def test_a_second_process_finds_the_compiled_artifacts_and_a_corrupted_entry_is_ignored(
    tmp_path: Path,
) -> None:
    cache = tmp_path / "cache"
    cold, _ = _child(cache)
    assert cold["inductor_dir"] == str(cache / "inductor")
    counts = cold["counters"]
    assert counts.get("fxgraph_cache_miss", 0) == 2 and counts.get("fxgraph_cache_hit", 0) == 0
    warm, _ = _child(cache)
    counts = warm["counters"]
    assert counts.get("fxgraph_cache_hit", 0) == 2 and counts.get("fxgraph_cache_miss", 0) == 0
    # corrupt every FX-graph entry: Inductor must skip them (logging a warning) and compile again
    entries = [p for p in (cache / "inductor" / "fxgraph").rglob("*") if p.is_file()]
    assert entries
    for p in entries:
        p.write_bytes(b"\x80\x04not a pickle")
    again, stderr = _child(cache)
    assert "unable to load compiled graph" in stderr
    assert again["counters"].get("fxgraph_cache_hit", 0) == 0


def test_compile_records_round_trip_and_bad_records_are_ignored(
    monkeypatch: pytest.MonkeyPatch, tmp_path: Path
) -> None:
    monkeypatch.setenv(C.CACHE_ENV_VAR, str(tmp_path / "cache"))
    assert C.compile_record("graph A") is None
    C.record_compile("graph A", 3.5)
    assert C.compile_record("graph A") == 3.5 and C.compile_record("graph B") is None
    records = tmp_path / "cache" / "records"
    (path,) = records.glob("*.json")
    assert stat.S_IMODE(os.stat(records).st_mode) == 0o700
    for bad in ("not json", '{"seconds": "3"}', '{"seconds": -1}', "[]", '{"other": 1}'):
        path.write_text(bad)  # a damaged hint is no hint: read as data, never run
        assert C.compile_record("graph A") is None
    C.record_compile("graph A", 2.0)
    assert C.compile_record("graph A") == 2.0 and not list(records.glob("*.tmp"))


def test_the_vec_isa_probe_runs_once_per_machine_on_the_isa_inductor_picks(
    monkeypatch: pytest.MonkeyPatch, tmp_path: Path
) -> None:
    import torch._inductor.config as inductor_config

    monkeypatch.setenv(C.CACHE_ENV_VAR, str(tmp_path / "cache"))
    monkeypatch.delenv("ATEN_CPU_CAPABILITY", raising=False)
    monkeypatch.setattr(C, "_vec_isa_key", lambda: ("vec_isa/test-cpu", ["avx512", "avx2"]))
    probes: list[str] = []

    def probe(accepted: list[str]) -> Callable[[str], bool]:
        def run(name: str) -> bool:
            probes.append(name)
            return name in accepted
        return run

    # config.patch restores both settings when the block ends (monkeypatch's undo would delete them
    # from Inductor's config: it deletes attributes it set on an object that has no __dict__ entry)
    with inductor_config.patch({"cpp.vec_isa_ok": None, "cpp.simdlen": None}):
        monkeypatch.setattr(C, "_isa_works", probe(["avx512", "avx2"]))
        assert not C.settle_vec_isa(probe=False) and not probes  # a GPU compile never probes the CPU
        monkeypatch.setattr(C, "_isa_works", probe(["avx2"]))  # the ISA Inductor would pick fails
        assert not C.settle_vec_isa() and inductor_config.cpp.vec_isa_ok is None and probes == ["avx512"]
        monkeypatch.setattr(C, "_isa_works", probe(["avx512"]))  # only the first ISA is probed
        assert C.settle_vec_isa() and inductor_config.cpp.vec_isa_ok is True and probes == ["avx512"] * 2
        inductor_config.cpp.vec_isa_ok = None  # a new process on this machine: no probe
        assert C.settle_vec_isa() and inductor_config.cpp.vec_isa_ok is True and len(probes) == 2
        inductor_config.cpp.vec_isa_ok = False  # the user's own setting wins
        assert not C.settle_vec_isa() and inductor_config.cpp.vec_isa_ok is False
        inductor_config.cpp.vec_isa_ok = None  # a chosen width: Inductor probes
        inductor_config.cpp.simdlen = 256
        assert not C.settle_vec_isa() and inductor_config.cpp.vec_isa_ok is None
        inductor_config.cpp.simdlen = None  # or a chosen ATEN_CPU_CAPABILITY
        monkeypatch.setenv("ATEN_CPU_CAPABILITY", "avx2")
        assert not C.settle_vec_isa() and inductor_config.cpp.vec_isa_ok is None
    assert hasattr(inductor_config.cpp, "vec_isa_ok") and hasattr(inductor_config.cpp, "simdlen")


def test_the_isa_inductor_picks_once_vec_isa_ok_is_set_is_the_one_probed(
    monkeypatch: pytest.MonkeyPatch,
) -> None:
    """What :func:`settle_vec_isa` relies on: with ``vec_isa_ok`` set, Inductor picks the first ISA
    of its list that the CPU reports (``_vec_isa_key``'s first candidate); and the one-ISA probe is
    Inductor's own (it accepts that ISA on this machine, as the full probe does)."""
    import torch._inductor.config as inductor_config
    from torch._inductor import cpu_vec_isa

    key = C._vec_isa_key()
    if key is None or not key[1]:
        pytest.skip("no x86 vector ISA")
    monkeypatch.delenv("ATEN_CPU_CAPABILITY", raising=False)
    cpu_vec_isa.valid_vec_isa_list.cache_clear()  # cached per process, under whatever setting ran first
    try:
        with inductor_config.patch({"cpp.vec_isa_ok": True, "cpp.simdlen": None}):
            assert str(cpu_vec_isa.pick_vec_isa()) == key[1][0]
    finally:
        cpu_vec_isa.valid_vec_isa_list.cache_clear()
    with inductor_config.patch({"cpp.vec_isa_ok": None}):
        assert C._isa_works(key[1][0])


# -- the TorchScript compiler ------------------------------------------------------------------
@pytest.mark.parametrize("dtype", [torch.float32, torch.float64])
def test_torchscript_computes_the_same_bits_as_eager_on_the_cpu(dtype: torch.dtype) -> None:
    # TorchScript fuses nothing on the CPU: the traced graph runs eager's own ATen kernels
    fn = C.compiled(f, name="ts_bits", compiler=C.torchscript, inductor=False)
    x, y = _inputs(dtype)
    assert fn.prepare(x, y) and fn.state == "ready"
    for scale in (1.0, -3.0, 40.0):  # new values through the same traced graph
        assert torch.equal(fn(x * scale, y), f(x * scale, y))


def test_a_torchscript_failure_falls_back_with_one_warning(monkeypatch: pytest.MonkeyPatch) -> None:
    def broken(*args: Any, **kwargs: Any) -> Any:
        raise RuntimeError("no TorchScript here")

    monkeypatch.setattr(torch.jit, "trace", broken)
    fn = C.compiled(f, name="ts_broken", compiler=C.torchscript, inductor=False)
    x, y = _inputs()
    with pytest.warns(C.CompileFallbackWarning, match="no TorchScript here"):
        assert torch.equal(fn(x, y), f(x, y))
    with warnings.catch_warnings():
        warnings.simplefilter("error")
        assert torch.equal(fn(x, y), f(x, y))  # eager from now on, silently
    assert fn.state == "failed"


def test_torchscript_refuses_a_trace_that_reads_tensor_values() -> None:
    # a trace freezes Python control flow on a tensor's value: refused, and the function runs eagerly
    def branchy(x: torch.Tensor) -> torch.Tensor:
        return x * 2 if bool(x.sum() > 0) else x - 1

    fn = C.compiled(branchy, name="ts_branchy", compiler=C.torchscript, inductor=False)
    up, down = torch.ones(3), -torch.ones(3)
    with pytest.warns(C.CompileFallbackWarning, match="depends on tensor values"):
        assert torch.equal(fn(up), up * 2)
    assert torch.equal(fn(down), down - 1) and fn.state == "failed"


def test_torchscript_traces_only_in_the_main_thread() -> None:
    # the trace's warnings are captured with process-wide filters: another thread falls back
    fn = C.compiled(f, name="ts_thread", compiler=C.torchscript, inductor=False)
    x, y = _inputs()
    out: dict[str, Any] = {}

    def work() -> None:
        with warnings.catch_warnings(record=True) as record:
            warnings.simplefilter("always")
            out["value"] = fn(x, y)
        out["messages"] = [str(w.message) for w in record if issubclass(w.category, C.CompileFallbackWarning)]

    thread = threading.Thread(target=work)
    thread.start()
    thread.join()
    assert torch.equal(out["value"], f(x, y)) and fn.state == "failed"
    assert len(out["messages"]) == 1 and "main thread" in out["messages"][0]


def test_the_torchscript_compiler_never_loads_inductor() -> None:
    # inductor=False skips Inductor's cache set-up and CPU probe (importing Inductor alone costs
    # about a second of a cold process)
    code = textwrap.dedent(
        """
        import sys, torch
        from bayesact import compilation as C
        fn = C.compiled(lambda x: torch.tanh(x) * 2, name="ts_cold", compiler=C.torchscript,
                        inductor=False)
        x = torch.randn(5)
        assert fn.prepare(x) and torch.equal(fn(x), torch.tanh(x) * 2)
        print("inductor loaded:", "torch._inductor" in sys.modules)
        """
    )
    out = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, timeout=120,
                         env={**os.environ, C.ENV_VAR: "1"})
    assert out.returncode == 0, out.stderr
    assert "inductor loaded: False" in out.stdout
