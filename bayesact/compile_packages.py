"""Ahead-of-time compiled packages: compile once per machine, load in milliseconds.

A graph compiled through Inductor's FX-graph cache still costs a new process seconds before its
first call: importing Inductor (its compiled modules import it) and looking the graph up. An
AOTInductor package (``torch._inductor.aoti_compile_and_package``: the graph's kernels and its
C++ wrapper in one shared library) is loaded by torch's C++ loader
(``torch._C._aoti.AOTIModelPackageLoader``) in milliseconds, without importing Inductor.

Packages live under :func:`bayesact.compilation.cache_dir` ``/packages`` (private, mode 0700,
safe to delete), one per key: ``<digest>.pt2`` and a JSON record ``<digest>.json`` holding the
package's SHA-256. The digest covers the caller's key, the torch version, the machine
architecture and the CPU's instruction-set flags (a library built for one CPU must never load on
another). A package whose bytes do not match its record, or that fails to load, is ignored with
one :class:`~bayesact.compilation.CompileFallbackWarning` and never executed; the caller compiles
as if it were absent.

``BAYESACT_PACKAGES=0`` turns packages off (none built or loaded); ``BAYESACT_COMPILE=0``
turns them off with all compilation. Packages are built by :func:`start_build`: a detached
child process (``nice`` 10, one thread, Inductor's compile pool off) runs a worker module
chosen by the caller, so a build never holds this process's GIL and outlives a short run; a
lock file keeps one build at a time.
Only ``torch`` and :mod:`bayesact.compilation` are imported here, so every layer may use it.
"""

from __future__ import annotations

import contextlib
import functools
import hashlib
import json
import os
import platform
import shutil
import subprocess
import sys
import tempfile
import time
import warnings
from collections.abc import Callable, Sequence
from pathlib import Path

import torch

from bayesact import compilation

__all__ = [
    "BUILD_TIMEOUT_SECONDS",
    "ENV_VAR",
    "PackagePaths",
    "building",
    "cleanup",
    "finish_build",
    "load",
    "mark_failed",
    "package_paths",
    "start_build",
    "supported",
]

#: a build lock older than this is stale (its worker died): another build may start
BUILD_TIMEOUT_SECONDS = 900.0

#: the loaders of this process, by package file (a package is loaded once per process)
_loaded: dict[str, Callable[[list[torch.Tensor]], list[torch.Tensor]]] = {}
#: environment variable: ``0`` (also ``false``, ``off``, ``no``) turns packages off: none is
#: built or loaded (compiling in-process is unaffected; the test suite sets it to stay hermetic)
ENV_VAR = "BAYESACT_PACKAGES"


class PackagePaths:
    """The files of one key's package: ``package`` (.pt2), ``record`` (.json), ``lock`` and
    ``log`` (the last build's output)."""

    def __init__(self, folder: Path, digest: str) -> None:
        self.package = folder / f"{digest}.pt2"
        self.record = folder / f"{digest}.json"
        self.lock = folder / f"{digest}.lock"
        self.log = folder / f"{digest}.log"


def supported(device: torch.device) -> bool:
    """Whether packages are built and loaded for ``device``: the CPU, with torch's AOTInductor
    loader, compilation on (:func:`bayesact.compilation.is_enabled`) and :data:`ENV_VAR` not off."""
    off = os.environ.get(ENV_VAR, "").strip().lower() in ("0", "false", "off", "no")
    return (device.type == "cpu" and not off and compilation.is_enabled()
            and hasattr(getattr(torch._C, "_aoti", None), "AOTIModelPackageLoader"))


@functools.lru_cache(maxsize=1)
def _cpu_flags() -> str:
    try:
        for line in Path("/proc/cpuinfo").read_text().splitlines():
            if line.startswith(("flags", "Features")):
                return " ".join(sorted(line.split(":", 1)[1].split()))
    except OSError:
        pass
    return platform.processor()


def package_paths(key: str) -> PackagePaths:
    """Where the package for ``key`` lives on this machine (for this torch and this CPU)."""
    return _package_paths(key, str(compilation.cache_dir()))


@functools.lru_cache(maxsize=64)
def _package_paths(key: str, cache: str) -> PackagePaths:
    ident = f"{key}|{torch.__version__}|{platform.machine()}|{_cpu_flags()}"
    digest = hashlib.sha256(ident.encode()).hexdigest()[:32]
    return PackagePaths(compilation.private_subdir("packages"), digest)


def _sha256(path: Path) -> str:
    h = hashlib.sha256()
    with path.open("rb") as f:
        for block in iter(lambda: f.read(1 << 20), b""):
            h.update(block)
    return h.hexdigest()


def load(key: str) -> Callable[[list[torch.Tensor]], list[torch.Tensor]] | None:
    """The compiled function of ``key``'s package (flat list of tensors in, list out), or None
    when there is none. A package that does not match its record's SHA-256, or does not load,
    is ignored with one warning (never executed)."""
    paths = package_paths(key)
    if not paths.record.exists() or not paths.package.exists():
        return None
    name = str(paths.package)
    if name in _loaded:
        return _loaded[name]
    try:
        meta = json.loads(paths.record.read_text())
        if not isinstance(meta, dict) or meta.get("sha256") != _sha256(paths.package):
            raise ValueError("its bytes do not match its record's SHA-256")
        loader = torch._C._aoti.AOTIModelPackageLoader(name, "model", False, 1, -1)
    except Exception as err:
        warnings.warn(f"bayesact: ignoring the compiled package {name!r}: {err}; compiling instead "
                      "(delete it to silence this warning)",
                      compilation.CompileFallbackWarning, stacklevel=2)
        return None
    _loaded[name] = loader.run
    return loader.run


def _fresh(lock: Path) -> bool:
    try:
        return time.time() - lock.stat().st_mtime < BUILD_TIMEOUT_SECONDS
    except OSError:
        return False


def building(key: str) -> bool:
    """Whether a build of ``key``'s package is in progress (a lock younger than
    :data:`BUILD_TIMEOUT_SECONDS`)."""
    return _fresh(package_paths(key).lock)


def start_build(key: str, module: str, files: dict[str, bytes]) -> bool:
    """Start a detached build of ``key``'s package: ``python -m module SPEC_DIR PACKAGE RECORD
    LOCK`` in a new session at ``nice`` 10 with one thread, ``files`` written into the private
    folder SPEC_DIR first. The worker must build the package with :func:`finish_build`, and
    remove SPEC_DIR and LOCK when it ends. Returns False (nothing started) when the package
    exists, its build failed before, any build is running on this machine (one at a time: a
    script sampling many models builds their packages one after another, over later runs), or
    the process cannot start."""
    paths = package_paths(key)
    if paths.package.exists() or paths.record.exists() or building(key):
        return False  # built, failed before (its record says why: delete it to retry), or building
    if any(_fresh(lock) for lock in paths.lock.parent.glob("*.lock")):
        return False  # one build at a time on this machine: this key's waits for a later run
    try:
        fd = os.open(paths.lock, os.O_CREAT | os.O_EXCL | os.O_WRONLY, 0o600)
    except FileExistsError:  # a stale lock (its worker died): take it over
        try:
            paths.lock.unlink()
            fd = os.open(paths.lock, os.O_CREAT | os.O_EXCL | os.O_WRONLY, 0o600)
        except OSError:
            return False
    except OSError:
        return False
    os.close(fd)
    spec = Path(tempfile.mkdtemp(prefix="build-", dir=paths.lock.parent))
    try:
        for name, data in files.items():
            (spec / name).write_bytes(data)
        env = {**os.environ, "OMP_NUM_THREADS": "1", "TORCHINDUCTOR_COMPILE_THREADS": "1"}
        with paths.log.open("wb") as log:
            subprocess.Popen(
                [sys.executable, "-m", module, str(spec), str(paths.package), str(paths.record),
                 str(paths.lock)],
                stdin=subprocess.DEVNULL, stdout=log, stderr=subprocess.STDOUT, env=env,
                start_new_session=True, close_fds=True,
            )
    except OSError:
        shutil.rmtree(spec, ignore_errors=True)
        paths.lock.unlink(missing_ok=True)
        return False
    return True


def finish_build(
    build: Callable[[str], None], check: Callable[[Callable[[list[torch.Tensor]], list[torch.Tensor]]], bool],
    package: Path, record: Path, seconds_since: float,
) -> bool:
    """For a worker: ``build(path)`` writes a package to a temporary path; it is loaded,
    ``check(run)`` must accept it (e.g. agree with eager), and then it is moved to ``package``
    and its record (SHA-256, build seconds) written, both atomically. Returns whether it was."""
    tmp = package.with_name(f"{package.stem}.{os.getpid()}.tmp.pt2")
    try:
        build(str(tmp))
        loader = torch._C._aoti.AOTIModelPackageLoader(str(tmp), "model", False, 1, -1)
        if not check(loader.run):
            return False
        digest = _sha256(tmp)
        os.replace(tmp, package)
        compilation.write_json_atomically(record, {
            "sha256": digest, "seconds": time.perf_counter() - seconds_since, "torch": torch.__version__,
            "time": time.time()})
        return True
    finally:
        tmp.unlink(missing_ok=True)


def mark_failed(record: Path, reason: str) -> None:
    """For a worker: note in ``record`` that the build failed (so no later run starts it again;
    :func:`load` finds no package and says nothing). Delete the record to retry."""
    with contextlib.suppress(OSError):
        compilation.write_json_atomically(
            record, {"failed": reason[-2000:], "torch": torch.__version__, "time": time.time()})


def cleanup(paths: Sequence[Path]) -> None:
    """Remove a worker's spec folder and lock (whatever happened)."""
    for path in paths:
        if path.is_dir():
            shutil.rmtree(path, ignore_errors=True)
        else:
            path.unlink(missing_ok=True)
