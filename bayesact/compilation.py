"""One compile policy for the whole library: compile, verify against eager, cache, fall back.

Every compiled path in bayesact (the fused activations, the kernels' fused recursion, the NUTS
kernels) goes through :func:`compiled`, which wraps a pure tensor function ``fn`` and

* compiles it with ``torch.compile`` (TorchInductor), or with a caller-supplied ``compiler``
  (e.g. :func:`torchscript`, a trace to TorchScript that takes milliseconds, runs the same ATen
  kernels as eager without Python's per-operation cost, and needs no Inductor);
* verifies the compiled function against ``fn`` on example inputs (the first call's arguments
  or ``verify_inputs``), within a tolerance set by the dtype (:func:`outputs_close`);
* falls back to ``fn`` with ONE :class:`CompileFallbackWarning` per distinct reason (a broken
  compiler warns once, not once per function) on any compile failure, runtime failure of the
  compiled code, or disagreement with eager; an error that ``fn`` raises too (bad input)
  propagates unchanged;
* with ``policy="auto"`` never makes a caller wait: calls run eagerly until the function has
  been called ``min_calls`` times, then it compiles in a background thread while calls keep
  running eagerly, and switches once the compiled function is verified.

Switches: the environment variable ``BAYESACT_COMPILE=0`` (also ``false``, ``off``, ``no``) turns
compilation off everywhere; :func:`set_enabled` and the context manager :func:`disabled` do the
same from code. Everything then runs the eager functions (identical results, no fusion).

Persistent cache ("compile once per machine"): before the first compilation the process points
Inductor's on-disk caches (FX graph cache, AOTAutograd cache, compiled C++/Triton kernels) at
:func:`cache_dir` ``/inductor``, unless ``TORCHINDUCTOR_CACHE_DIR`` is already set. The
directory is ``BAYESACT_CACHE_DIR``, else ``$XDG_CACHE_HOME/bayesact``, else
``~/.cache/bayesact``; it is created with mode 0700, and it is safe to delete at any time (the
next run compiles again). Inductor unpickles its cache entries, so a directory that is not owned
by the user, is group/world-writable or is a symbolic link is refused with a
:class:`CacheDirWarning` and a fresh private temporary directory is used instead. Inductor keys
entries by a hash of the graph, its inputs' properties, the configuration and the torch version;
an entry that does not unpickle is skipped (logged by Inductor) and compiled again, and a
compiled result that disagrees with eager is never used (the verification above).
:func:`record_compile` / :func:`compile_record` keep JSON notes under :func:`cache_dir`
``/records`` of what was compiled and how long it took, so a caller (``mcmc(compile="auto")``)
can tell that a compile will be a cache hit; a damaged note is ignored. One such note remembers
that Inductor's CPU vector-ISA probe (a test library compiled and loaded in a child Python per
ISA, 2–3 s in every process) accepted every ISA of this CPU, so later processes skip it
(:func:`settle_vec_isa`).

Only ``torch`` is imported here, so every layer (``infer`` included) may use this module.
"""

from __future__ import annotations

import contextlib
import hashlib
import json
import os
import platform
import stat
import sys
import tempfile
import threading
import time
import types
import warnings
from collections.abc import Callable, Iterator, Mapping, Sequence
from pathlib import Path
from typing import Any, Literal

import torch
import torch.utils.checkpoint

__all__ = [
    "AUTO_MIN_CALLS",
    "CACHE_ENV_VAR",
    "ENV_VAR",
    "CacheDirWarning",
    "CompileFallbackWarning",
    "Compiled",
    "cache_dir",
    "compile_record",
    "compiled",
    "disabled",
    "fallbacks",
    "is_enabled",
    "outputs_close",
    "private_subdir",
    "record_compile",
    "set_enabled",
    "settle_vec_isa",
    "torchscript",
    "use_persistent_cache",
    "write_json_atomically",
]

#: environment variable: ``0``/``false``/``off``/``no`` turns compilation off everywhere
ENV_VAR = "BAYESACT_COMPILE"
#: environment variable: the directory of the persistent compile cache
CACHE_ENV_VAR = "BAYESACT_CACHE_DIR"
#: with ``policy="auto"``, the number of calls after which a function compiles in the background
AUTO_MIN_CALLS = 3

_OFF_VALUES = ("0", "false", "off", "no")

Policy = Literal["always", "auto"]

#: exceptions that torch raises through user code for control flow, never compile failures:
#: non-reentrant activation checkpointing stops a recomputation with ``_StopRecomputationError``
_CONTROL_FLOW: tuple[type[BaseException], ...] = tuple(
    exc for exc in (getattr(torch.utils.checkpoint, "_StopRecomputationError", None),) if exc is not None
)
Compiler = Callable[[Callable[..., Any], tuple[Any, ...]], Callable[..., Any]]

#: calls :func:`torchscript` makes before returning: TorchScript's profiling executor records the
#: first call and optimises the graph at the second, so the third runs the plan later calls run
_TORCHSCRIPT_WARM_CALLS = 2


class CompileFallbackWarning(RuntimeWarning):
    """A function could not be compiled (or its compiled form disagreed with eager): it runs eagerly."""


class CacheDirWarning(RuntimeWarning):
    """The compile-cache directory is unsafe or unusable; a private temporary one is used instead."""


# ---------------------------------------------------------------------------------------------
# the switch


_user_enabled = True
_switch_lock = threading.Lock()


def is_enabled() -> bool:
    """Whether compilation is on: :func:`set_enabled` (default True) and ``BAYESACT_COMPILE`` not off."""
    return _user_enabled and os.environ.get(ENV_VAR, "1").strip().lower() not in _OFF_VALUES


def set_enabled(flag: bool) -> bool:
    """Turn compilation on or off for the whole process; returns the previous setting.

    Off, every compiled function runs its eager version (already compiled ones included).
    The environment variable ``BAYESACT_COMPILE=0`` overrides ``set_enabled(True)``.
    """
    global _user_enabled
    if not isinstance(flag, bool):
        raise TypeError(f"set_enabled: flag must be a bool, got {type(flag).__name__}")
    with _switch_lock:
        previous, _user_enabled = _user_enabled, flag
    return previous


@contextlib.contextmanager
def disabled() -> Iterator[None]:
    """Context manager: compilation off inside the block (process-wide), restored after it."""
    previous = set_enabled(False)
    try:
        yield
    finally:
        set_enabled(previous)


# ---------------------------------------------------------------------------------------------
# the persistent cache directory


def _default_cache_root() -> Path:
    configured = os.environ.get(CACHE_ENV_VAR)
    if configured:
        return Path(configured).expanduser()
    xdg = os.environ.get("XDG_CACHE_HOME")
    base = Path(xdg).expanduser() if xdg else Path.home() / ".cache"
    return base / "bayesact"


def _unsafe_reason(path: Path) -> str | None:
    """Why ``path`` (an existing directory) must not hold executable cache entries, or None."""
    info = os.lstat(path)
    if stat.S_ISLNK(info.st_mode):
        return "it is a symbolic link"
    if not stat.S_ISDIR(info.st_mode):
        return "it is not a directory"
    getuid = getattr(os, "getuid", None)
    if getuid is not None and info.st_uid != getuid():
        return f"it is owned by uid {info.st_uid}, not by this user (uid {getuid()})"
    if info.st_mode & (stat.S_IWGRP | stat.S_IWOTH):
        return f"it is writable by others (mode {stat.S_IMODE(info.st_mode):o})"
    return None


def _private_dir(path: Path) -> Path:
    """``path`` created (mode 0700) and checked; a fresh private temporary directory if unsafe."""
    try:
        path.mkdir(mode=0o700, parents=True, exist_ok=True)
        reason = _unsafe_reason(path)
    except OSError as err:
        reason = f"it cannot be created ({err})"
    if reason is None:
        return path
    fresh = Path(tempfile.mkdtemp(prefix="bayesact-cache-"))  # 0700, owned by us
    warnings.warn(
        f"bayesact: refusing the compile-cache directory {str(path)!r}: {reason}. Using the fresh "
        f"private directory {str(fresh)!r} for this process (set {CACHE_ENV_VAR} to a directory "
        "that only you can write to).",
        CacheDirWarning,
        stacklevel=3,
    )
    return fresh


_cache_dir: Path | None = None
_cache_lock = threading.Lock()


def cache_dir() -> Path:
    """The persistent compile-cache directory of this process (created 0700, checked once).

    ``BAYESACT_CACHE_DIR``, else ``$XDG_CACHE_HOME/bayesact``, else ``~/.cache/bayesact``; a
    fresh private temporary directory (with a :class:`CacheDirWarning`) when that one is not
    owned by the user, is writable by others or is a symbolic link.
    """
    global _cache_dir
    with _cache_lock:
        if _cache_dir is None:
            _cache_dir = _private_dir(_default_cache_root())
        return _cache_dir


def private_subdir(name: str) -> Path:
    """``cache_dir() / name``, created with mode 0700 and checked like :func:`cache_dir` (a
    fresh private temporary directory, with a :class:`CacheDirWarning`, when unsafe)."""
    return _private_dir(cache_dir() / name)


_persistent_configured = False
#: TORCHINDUCTOR_CACHE_DIR as this module found it (torch sets it to its default when Dynamo loads)
_inductor_dir_at_import = os.environ.get("TORCHINDUCTOR_CACHE_DIR")


def use_persistent_cache() -> str:
    """Point Inductor's on-disk caches at ``cache_dir()/inductor`` (once per process); returns the
    directory Inductor uses. A ``TORCHINDUCTOR_CACHE_DIR`` that the user set (to anything but
    torch's default, which torch itself writes into the environment) is kept as it is."""
    from torch._inductor.runtime.cache_dir_utils import default_cache_dir

    global _persistent_configured
    with _cache_lock:
        configured = _persistent_configured
        _persistent_configured = True
    if not configured:
        current = os.environ.get("TORCHINDUCTOR_CACHE_DIR")
        user_set = _inductor_dir_at_import is not None and _inductor_dir_at_import != default_cache_dir()
        if not user_set:
            os.environ["TORCHINDUCTOR_CACHE_DIR"] = str(_private_dir(cache_dir() / "inductor"))
            if current is not None:  # Inductor may have memoised paths under the old directory
                from torch._inductor.utils import clear_caches

                clear_caches()
    return os.environ.get("TORCHINDUCTOR_CACHE_DIR") or default_cache_dir()


# ---------------------------------------------------------------------------------------------
# compile records: which graphs this machine has compiled before


def _record_path(key: str) -> Path:
    digest = hashlib.sha256(f"{key}|{use_persistent_cache()}|{torch.__version__}".encode()).hexdigest()
    return cache_dir() / "records" / f"{digest[:32]}.json"


def record_compile(key: str, seconds: float) -> None:
    """Note that the graphs identified by ``key`` were compiled in ``seconds`` (so Inductor's
    persistent cache now holds them). A plain JSON file under :func:`cache_dir` ``/records``,
    written atomically, keyed by ``key``, the Inductor cache directory and the torch version;
    failures to write are ignored (the record is only a hint)."""
    path = _record_path(key)
    try:
        path.parent.mkdir(mode=0o700, exist_ok=True)
        write_json_atomically(path, {"seconds": float(seconds), "time": time.time()})
    except OSError:
        pass


def write_json_atomically(path: Path, value: Any) -> None:
    """Write ``value`` as JSON to ``path`` through a temporary file in the same folder replaced
    over it (a reader sees the old file or the new one, never half of one); raises OSError."""
    tmp = path.with_name(f"{path.name}.{os.getpid()}.{threading.get_ident()}.tmp")
    try:
        tmp.write_text(json.dumps(value))
        os.replace(tmp, path)
    finally:
        tmp.unlink(missing_ok=True)


def compile_record(key: str) -> float | None:
    """The seconds of the last compilation noted by :func:`record_compile` for ``key``, or None
    (never compiled here, or the record is missing, unreadable or malformed: it is only a hint,
    read as JSON, never executed)."""
    try:
        seconds = json.loads(_record_path(key).read_text())["seconds"]
    except (OSError, ValueError, KeyError, TypeError):
        return None
    return float(seconds) if isinstance(seconds, int | float) and seconds >= 0 else None


# ---------------------------------------------------------------------------------------------
# Inductor's CPU vector-ISA probe, remembered


def _vec_isa_key() -> tuple[str, list[str]] | None:
    """The record key of this machine's Inductor vector-ISA probe and the ISAs the CPU reports
    (x86 only), or None. The probe compiles a test library per ISA and loads it in a child
    Python, in every process: seconds before the first CPU kernel, even on a cache hit."""
    try:
        from torch._inductor import cpu_vec_isa
        from torch._inductor.cpp_builder import get_cpp_compiler

        if platform.machine() not in ("x86_64", "AMD64"):
            return None
        flags = cpu_vec_isa.x86_isa_checker()
        candidates = [str(isa) for isa in cpu_vec_isa.supported_vec_isa_list
                      if all(flag in flags for flag in str(isa).split())]
        return f"vec_isa/{get_cpp_compiler()}/{' '.join(candidates)}", candidates
    except Exception:  # a private torch API moved: just let Inductor probe
        return None


def _isa_works(name: str) -> bool:
    """Inductor's own probe of one vector ISA (compile a test library with its flags, load it in a
    child Python): seconds, so only the ISA Inductor will pick is probed."""
    from torch._inductor import cpu_vec_isa

    isa = next((i for i in cpu_vec_isa.supported_vec_isa_list if str(i) == name), None)
    return isa is not None and bool(isa)


def settle_vec_isa(probe: bool = True) -> bool:
    """Tell Inductor (``config.cpp.vec_isa_ok``) that the vector ISA it will pick works, when the
    probe accepted it, in this process or an earlier one (a :func:`compile_record` for this
    torch, compiler and CPU). With ``vec_isa_ok`` set, Inductor picks the first ISA of its list
    that the CPU reports, so that one is probed; Inductor's own first CPU compile would probe
    every ISA of the list (three on an AVX-512 CPU, 7 s here), once per process. Without a record
    the probe runs here (if ``probe``: the compile is for CPU code); a GPU compile only reads the
    record. Returns whether the probe is skipped from now on; a failed probe, a chosen
    ``simdlen`` or ``ATEN_CPU_CAPABILITY``, or a user's own ``vec_isa_ok`` leave Inductor as it
    is. Setting it before every compile, not only after a first one, keeps Inductor's cache keys
    (which include the setting) the same in every process."""
    import torch._inductor.config as inductor_config

    if inductor_config.cpp.vec_isa_ok is not None:  # set already: by us or by the user
        return bool(inductor_config.cpp.vec_isa_ok)
    if inductor_config.cpp.simdlen is not None or os.environ.get("ATEN_CPU_CAPABILITY"):
        return False  # Inductor picks by width or by this variable: leave its probe alone
    key = _vec_isa_key()
    if key is None or not key[1]:
        return False
    if compile_record(key[0]) is None:
        if not probe:
            return False
        try:
            works = _isa_works(key[1][0])
        except Exception:
            return False
        if not works:
            return False
        record_compile(key[0], 0.0)
    inductor_config.cpp.vec_isa_ok = True
    return True


# ---------------------------------------------------------------------------------------------
# verification


def _leaves(out: Any) -> list[Any]:
    if isinstance(out, (tuple, list)):
        return [leaf for item in out for leaf in _leaves(item)]
    if isinstance(out, Mapping):
        return [leaf for key in sorted(out) for leaf in _leaves(out[key])]
    return [out]


_RTOL = {torch.float64: 1e-9, torch.float32: 1e-4, torch.float16: 1e-2, torch.bfloat16: 2e-2}


def outputs_close(got: Any, ref: Any) -> bool:
    """Whether ``got`` (compiled) equals ``ref`` (eager) within the tolerance of their dtype.

    Structures (tuples, lists, mappings of tensors) must match; non-float leaves and the
    positions of non-finite values must be equal; float leaves agree to
    ``rtol·(1 + max|ref|) + 64·eps·S`` with ``rtol`` 1e-9 (float64), 1e-4 (float32), 1e-2
    (float16), 2e-2 (bfloat16) and S the largest finite |value| of any output (an output
    computed as a difference of large ones keeps only their absolute precision).
    """
    a_leaves, b_leaves = ([t.detach() if isinstance(t, torch.Tensor) else t for t in _leaves(out)]
                          for out in (got, ref))  # values only: no autograd warnings or history
    if len(a_leaves) != len(b_leaves):
        return False
    floats = [b for b in b_leaves if isinstance(b, torch.Tensor) and b.is_floating_point() and b.numel()]
    largest = 0.0
    for b in floats:
        finite = b[torch.isfinite(b)]
        if finite.numel():
            largest = max(largest, float(finite.abs().max()))
    for a, b in zip(a_leaves, b_leaves, strict=True):
        if not isinstance(b, torch.Tensor):
            if isinstance(a, torch.Tensor) or a != b:
                return False
            continue
        if not isinstance(a, torch.Tensor) or a.shape != b.shape or a.dtype != b.dtype:
            return False
        if not b.is_floating_point():
            if not torch.equal(a.cpu(), b.cpu()):
                return False
            continue
        finite = torch.isfinite(b)
        odd_a, odd_b = a[~finite], b[~finite]  # NaN and ±inf: the same ones in the same places
        if (not torch.equal(finite, torch.isfinite(a)) or not torch.equal(odd_a.isnan(), odd_b.isnan())
                or not torch.equal(odd_a.nan_to_num(0.0), odd_b.nan_to_num(0.0))):
            return False
        if not finite.any():
            continue
        rtol = _RTOL.get(b.dtype, 1e-4)
        tolerance = rtol * (1 + float(b[finite].abs().max())) + 64 * torch.finfo(b.dtype).eps * largest
        if float((a[finite] - b[finite]).abs().max()) > tolerance:
            return False
    return True


# ---------------------------------------------------------------------------------------------
# fallback warnings


_warned: set[str] = set()
_fallbacks: dict[str, str] = {}
_warn_lock = threading.Lock()


def fallbacks() -> dict[str, str]:
    """The functions (by name) that fell back to eager in this process, with the reason."""
    return dict(_fallbacks)


def _describe(err: BaseException) -> str:
    text = str(err).strip().splitlines()
    return f"{type(err).__name__}: {text[0]}" if text else type(err).__name__


def _warn_fallback(name: str, reason: str, stacklevel: int) -> None:
    """Record the fallback; warn once per distinct reason in the process."""
    with _warn_lock:
        _fallbacks[name] = reason
        if reason in _warned:
            return
        _warned.add(reason)
    warnings.warn(
        f"bayesact: compiling {name!r} failed ({reason}); it runs eagerly (same results, slower). "
        f"Set {ENV_VAR}=0 to turn compilation off.",
        CompileFallbackWarning,
        stacklevel=stacklevel,
    )


# ---------------------------------------------------------------------------------------------
# the compiled function


def torchscript(fn: Callable[..., Any], example: tuple[Any, ...]) -> Callable[..., Any]:
    """A :data:`Compiler` for :func:`compiled` (with ``inductor=False``): ``fn`` traced to
    TorchScript at ``example`` (``torch.jit.trace``, a few milliseconds), then called
    :data:`_TORCHSCRIPT_WARM_CALLS` times so that the profiling executor has settled.

    The traced graph runs the same ATen kernels as ``fn`` in TorchScript's C++ interpreter: on
    the CPU, where TorchScript fuses nothing, it computes the same bits as ``fn`` without
    Python's cost per operation (a few microseconds each: most of the time of a small model's
    step). ``fn`` must be shape-static and free of data-dependent Python control flow: a trace
    that reads a tensor's value on the host (``torch.jit.TracerWarning``) is refused. Tracing
    removes operations whose results are unused, including those without outputs whose only
    effect is to raise (``aten._linalg_check_errors``, which makes a failed
    ``torch.linalg.cholesky`` raise): trace only functions without such checks (see
    :func:`bayesact.infer.compiled.compile_nuts_kernels`). ``torch.jit`` is deprecated in favour of
    ``torch.compile`` and is not supported on Python 3.14+, where this raises (and
    :func:`compiled` falls back), as it does outside the main thread (the trace's warnings are
    captured, and Python's warning filters are process-wide).
    """
    if sys.version_info >= (3, 14):
        raise RuntimeError("TorchScript is not supported on Python 3.14+")
    if threading.current_thread() is not threading.main_thread():
        # the trace's warnings are captured, and warning filters are process-wide
        raise RuntimeError("TorchScript tracing runs in the main thread only")
    with warnings.catch_warnings(record=True) as caught, torch.no_grad():
        warnings.simplefilter("always")  # recorded here, never shown (the deprecation notice too)
        traced = torch.jit.trace(fn, example, check_trace=False)
    unsafe = [str(w.message) for w in caught if issubclass(w.category, torch.jit.TracerWarning)]
    if unsafe:  # a value read on the host (control flow, an index) would be frozen into the graph
        raise RuntimeError(f"the trace depends on tensor values: {unsafe[0]}")
    with torch.no_grad():
        for _ in range(_TORCHSCRIPT_WARM_CALLS):
            traced(*example)
    return traced


def _own_code(fn: Callable[..., Any], name: str) -> Callable[..., Any]:
    """A copy of the plain function ``fn`` with its own code object named ``name``.

    Dynamo caches compiled graphs on code objects (at most ``recompile_limit`` per object, then it
    silently runs eagerly), so functions that share a code object (closures made by one factory)
    each need their own.
    """
    if not isinstance(fn, types.FunctionType):
        return fn
    code = fn.__code__.replace(co_name=name, co_qualname=name)
    copy = types.FunctionType(code, fn.__globals__, name, fn.__defaults__, fn.__closure__)
    copy.__kwdefaults__ = fn.__kwdefaults__
    return copy


def _detached(args: Sequence[Any]) -> tuple[Any, ...]:
    """Copies of the tensor arguments (detached), so a background compile never sees them change."""
    def copy(a: Any) -> Any:
        if isinstance(a, torch.Tensor):
            return a.detach().clone().requires_grad_(a.requires_grad)
        if isinstance(a, tuple) and hasattr(a, "_fields"):
            return type(a)(*(copy(v) for v in a))
        if isinstance(a, (tuple, list)):
            return type(a)(copy(v) for v in a)
        return a

    return tuple(copy(a) for a in args)


class _Disagreement(RuntimeError):
    pass


_NOTHING: Any = object()


class Compiled:
    """A pure tensor function with a compiled form, verified against it, used when enabled.

    Built by :func:`compiled`. Calling it runs the compiled function when compilation is on and
    the compiled form is ready, else ``fn`` itself. Attributes: ``name``, ``fn``, ``state``
    (``"new"``, ``"building"``, ``"ready"``, ``"failed"``), ``compile_seconds`` (time of the
    build, first compiled run and verification included) and ``fallback_reason``.
    """

    def __init__(
        self,
        fn: Callable[..., Any],
        *,
        name: str,
        policy: Policy,
        verify_inputs: Sequence[Any] | None,
        dynamic: bool | None,
        min_calls: int,
        options: Mapping[str, Any] | None,
        dynamo_config: Mapping[str, Any] | None,
        compiler: Compiler | None,
        inductor: bool = True,
    ) -> None:
        self.fn = fn
        self.name = name
        self.policy = policy
        self.verify_inputs = None if verify_inputs is None else tuple(verify_inputs)
        self.dynamic = dynamic
        self.min_calls = min_calls
        self.options = dict(options) if options else None
        self.dynamo_config = dict(dynamo_config) if dynamo_config else None
        self.compiler = compiler
        self.inductor = inductor
        self.state = "new"
        self.calls = 0
        self.compile_seconds = 0.0
        self.fallback_reason: str | None = None
        self._compiled: Callable[..., Any] | None = None
        self._lock = threading.Lock()
        self._thread: threading.Thread | None = None
        self._pending: str | None = None  # a background failure, warned from the caller's thread

    # -- building ---------------------------------------------------------------------------

    def _compile(self, example: tuple[Any, ...]) -> Callable[..., Any]:
        if self.inductor:
            use_persistent_cache()  # before Dynamo loads (it writes torch's default directory)
            settle_vec_isa(probe=any(isinstance(t, torch.Tensor) and t.device.type == "cpu"
                                     for t in _leaves(example)))
        if self.compiler is None and not torch._dynamo.is_dynamo_supported():
            raise RuntimeError(f"torch.compile is not supported on Python {sys.version.split()[0]}")
        label = "".join(c if c.isalnum() else "_" for c in self.name)
        fn = _own_code(self.fn, f"bayesact_{label}")
        if self.compiler is not None:
            return self.compiler(fn, example)
        return torch.compile(fn, dynamic=self.dynamic, options=self.options)

    def _with_config(self) -> contextlib.AbstractContextManager[Any]:
        if self.dynamo_config:
            return torch._dynamo.config.patch(**self.dynamo_config)
        return contextlib.nullcontext()

    def _build(self, example: tuple[Any, ...], grad_enabled: bool, quiet: bool) -> Any:
        """Compile, run once on ``example`` and compare with ``fn``; returns ``fn(*example)``,
        raises on any failure (:class:`_Disagreement` when the results differ). Sets
        ``_compiled`` and ``state``.
        ``quiet`` silences compiler warnings (not in a background thread: the filter is global)."""
        start = time.perf_counter()
        try:
            quieted = warnings.catch_warnings() if quiet else contextlib.nullcontext()
            with torch.set_grad_enabled(grad_enabled), quieted:
                if quiet:
                    warnings.simplefilter("ignore")  # compiler chatter; our own warning says it all
                compiled_fn = self._compile(example)
                with self._with_config():
                    got = compiled_fn(*example)
                want = self.fn(*example)
        finally:
            self.compile_seconds += time.perf_counter() - start
        if not outputs_close(got, want):
            raise _Disagreement("the compiled result differs from eager at the example inputs")
        self._compiled = compiled_fn
        self.state = "ready"
        return want

    def _fail(self, err: BaseException) -> None:
        self.fallback_reason = _describe(err)
        self.state = "failed"
        self._compiled = None

    def _build_now(self, example: tuple[Any, ...]) -> Any:
        """Build on ``example`` now; returns ``fn(*example)`` (computed either way)."""
        try:
            return self._build(example, torch.is_grad_enabled(), quiet=True)
        except Exception as err:
            # an error eager raises too is the input's: it propagates, and the next call tries again
            result = self.fn(*example)
            self._fail(err)
            _warn_fallback(self.name, self.fallback_reason or "", stacklevel=6)
            return result

    def _build_in_background(self, args: tuple[Any, ...]) -> None:
        example = self.verify_inputs if self.verify_inputs is not None else _detached(args)
        grad_enabled = torch.is_grad_enabled()

        def work() -> None:
            try:
                self._build(example, grad_enabled, quiet=False)
            except Exception as err:
                if not isinstance(err, _Disagreement):
                    try:
                        self.fn(*example)
                    except Exception:  # bad input: the caller sees eager's error; try again later
                        self.state = "new"
                        return
                self._fail(err)
                self._pending = self.fallback_reason

        self.state = "building"
        self._thread = threading.Thread(target=work, name=f"bayesact-compile-{self.name}", daemon=True)
        self._thread.start()

    # -- calling ----------------------------------------------------------------------------

    def _step(self, args: tuple[Any, ...]) -> Any:
        """Advance the policy for a call with ``args``; ``fn(*args)`` when that was computed on the
        way (a build on the call's own arguments), else ``_NOTHING``."""
        if self._pending is not None:
            reason, self._pending = self._pending, None
            _warn_fallback(self.name, reason, stacklevel=5)
        if self.state != "new" or not is_enabled():
            return _NOTHING
        with self._lock:
            if self.state != "new":
                return _NOTHING
            self.calls += 1
            if self.policy == "always":
                if self.verify_inputs is None:
                    return self._build_now(args)
                self._build_now(self.verify_inputs)
            elif self.calls >= self.min_calls:
                self._build_in_background(args)
        return _NOTHING

    def prepare(self, *args: Any) -> bool:
        """Advance the policy for a call with ``args``; True when the compiled form is ready.

        ``"always"`` compiles (and verifies) now, the first time; ``"auto"`` counts calls and
        starts a background compile at the ``min_calls``-th. Off (:func:`is_enabled`), False.
        """
        self._step(args)
        return self.state == "ready" and is_enabled()

    def run(self, *args: Any) -> Any:
        """The compiled function at ``args`` (call after :meth:`prepare` said True); a runtime
        failure of the compiled code falls back to ``fn`` with one warning."""
        compiled_fn = self._compiled
        if compiled_fn is None or not is_enabled():
            return self.fn(*args)
        try:
            with self._with_config():
                return compiled_fn(*args)
        except _CONTROL_FLOW:
            raise  # not a failure: e.g. activation checkpointing stopping its recomputation early
        except Exception as err:
            result = self.fn(*args)  # raises the genuine error for bad input
            self._fail(err)
            _warn_fallback(self.name, self.fallback_reason or "", stacklevel=4)
            return result

    def __call__(self, *args: Any) -> Any:
        result = self._step(args)
        if result is not _NOTHING:
            return result
        if self.state == "ready" and is_enabled():
            return self.run(*args)
        return self.fn(*args)

    def wait(self, timeout: float | None = None) -> str:
        """Wait for a background compile to finish; returns ``state``."""
        thread = self._thread
        if thread is not None:
            thread.join(timeout)
        return self.state

    def __repr__(self) -> str:
        return f"Compiled({self.name!r}, policy={self.policy!r}, state={self.state!r})"


def compiled(
    fn: Callable[..., Any],
    *,
    name: str,
    policy: Policy = "always",
    verify_inputs: Sequence[Any] | None = None,
    dynamic: bool | None = None,
    min_calls: int = AUTO_MIN_CALLS,
    options: Mapping[str, Any] | None = None,
    dynamo_config: Mapping[str, Any] | None = None,
    compiler: Compiler | None = None,
    inductor: bool = True,
) -> Compiled:
    """``fn`` with a compiled form that is verified against it and replaced by it on failure.

    Args:
        fn: a pure function of tensors (same inputs, same outputs; no randomness, no mutation).
        name: what warnings and :func:`fallbacks` call it; also names the code object Dynamo
            caches on (each compiled function gets its own, so they never share a recompile limit).
        policy: ``"always"`` compiles at the first call (which waits for it); ``"auto"`` runs
            eagerly until ``min_calls`` calls, then compiles in a background thread and switches
            when the compiled form is verified (no call ever waits for a compile).
        verify_inputs: example arguments to compile and verify on; default the first call's
            (``"always"``) or copies of the ``min_calls``-th call's (``"auto"``).
        dynamic: ``torch.compile``'s ``dynamic`` (None: specialise, then generalise on a new shape).
        min_calls: for ``"auto"``, the calls before the background compile starts (>= 1).
        options: Inductor options (``torch.compile(options=...)``).
        dynamo_config: ``torch._dynamo.config`` settings applied around compiling and calling
            (e.g. ``{"recompile_limit": 512}`` for a function compiled for many shapes).
        compiler: instead of ``torch.compile``, ``compiler(fn, example_args) -> callable`` (e.g.
            ``make_fx`` + ``torch._inductor.standalone_compile`` for a guard-free graph, or
            :func:`torchscript`).
        inductor: whether the compiler uses Inductor (its persistent cache and CPU probe are
            set up before the first compile); False for :func:`torchscript`.

    Returns:
        a :class:`Compiled`, called like ``fn``.
    """
    if not isinstance(name, str) or not name:
        raise ValueError(f"compiled: name must be a non-empty string, got {name!r}")
    if policy not in ("always", "auto"):
        raise ValueError(f"compiled: policy must be 'always' or 'auto', got {policy!r}")
    if isinstance(min_calls, bool) or not isinstance(min_calls, int) or min_calls < 1:
        raise ValueError(f"compiled: min_calls must be a positive integer, got {min_calls!r}")
    if not callable(fn):
        raise TypeError(f"compiled: fn must be callable, got {type(fn).__name__}")
    return Compiled(fn, name=name, policy=policy, verify_inputs=verify_inputs, dynamic=dynamic,
                    min_calls=min_calls, options=options, dynamo_config=dynamo_config, compiler=compiler,
                    inductor=inductor)
