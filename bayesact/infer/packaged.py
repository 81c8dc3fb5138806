"""The NUTS pair-of-leaves step as an ahead-of-time compiled package (one build per machine).

A new process that finds the step compiled by Inductor's FX-graph cache still spends seconds
importing Inductor and looking the graph up; a package of :mod:`bayesact.compile_packages` loads
in milliseconds. :func:`build_files` ships a run's captured gradient graph (its Python code,
which calls ATen operators only, and its constant tensors) and sampler state to a detached
worker (``python -m bayesact.infer.package_worker``), which rebuilds the gradient, traces the pair
step exactly as :func:`~bayesact.infer.compiled.compile_nuts_kernels` does, compiles it with
AOTInductor, checks the package against the traced graph run eagerly and stores it under the
run's :func:`~bayesact.infer.compiled.nuts_kernels_key`. :func:`load_nuts_kernels` loads it in a
later run and checks it against the eager pair step on that run's state before using it.
Inputs are made contiguous before each call (the package is built for contiguous inputs).
"""

from __future__ import annotations

import contextlib
import functools
import io
import json
import math
import os
import time
import traceback
import types
import warnings
from collections.abc import Callable, Sequence
from pathlib import Path
from typing import Any

import torch

from bayesact import compilation, compile_packages
from bayesact.infer.compiled import (
    _arg_spec,
    _Counted,
    _flatten,
    _unflatten,
    nuts_pair_example,
    trace_flat,
    with_finite_example,
)
from bayesact.infer.graph_passes import fetch_attr
from bayesact.infer.nuts_tree import NutsKernels, merge_and_start

__all__ = ["WORKER", "build_files", "load_nuts_kernels", "main", "rebuild_gradient"]

#: the worker module run by :func:`bayesact.compile_packages.start_build`
WORKER = "bayesact.infer.package_worker"
#: the globals a ``make_fx`` graph's code may use (anything else: the graph is not shipped)
_GLOBALS: dict[str, Any] = {
    "inf": math.inf, "nan": math.nan, "NoneType": type(None), "torch": torch, "device": torch.device,
    "fx_pytree": torch.fx._pytree, "pytree": torch.utils._pytree,
}
_STATE = ("z", "potential", "grad", "step_size", "inverse_mass")


def build_files(graph: torch.fx.GraphModule, state: dict[str, torch.Tensor], max_tree_depth: int,
                max_delta_energy: float) -> dict[str, bytes] | None:
    """The worker's input for ``graph`` (the captured gradient) and the sampler ``state`` (the
    tensors z, potential, grad, step_size, inverse_mass), or None when the graph cannot be
    shipped (its code uses other globals, or a constant is not a plain tensor attribute)."""
    code = graph.graph.python_code(root_module="self")
    if set(code.globals) - set(_GLOBALS):
        return None
    constants: dict[str, torch.Tensor] = {}
    for node in graph.graph.nodes:
        if node.op == "get_attr":
            value = fetch_attr(graph, str(node.target))
            if not isinstance(value, torch.Tensor) or "." in str(node.target):
                return None
            constants[str(node.target)] = value.detach().cpu()
    buffer = io.BytesIO()
    torch.save({"constants": constants, "state": {k: state[k].detach().cpu() for k in _STATE}}, buffer)
    meta = {"code": code.src, "max_tree_depth": max_tree_depth, "max_delta_energy": max_delta_energy}
    return {"graph.json": json.dumps(meta).encode(), "tensors.pt": buffer.getvalue()}


class _Packaged:
    """The package's pair step called like the eager one (contiguous flat inputs)."""

    def __init__(self, run: Callable[[list[torch.Tensor]], list[torch.Tensor]],
                 out_spec: Sequence[type | None]) -> None:
        self.run = run
        self.out_spec = out_spec

    def __call__(self, *args: Any) -> Any:
        return _unflatten(self.run([t.contiguous() for t in _flatten(args)]), self.out_spec)


def load_nuts_kernels(
    key: str, potential_and_grad: Callable[..., Any], z: torch.Tensor, potential: torch.Tensor,
    grad: torch.Tensor, step_size: torch.Tensor, inverse_mass: torch.Tensor, max_tree_depth: int,
    max_delta_energy: float, counter: Any,
) -> NutsKernels | None:
    """NUTS kernels whose pair step is ``key``'s package, or None (no package, or it disagrees
    with the eager pair step at this state: warned once, not used)."""
    run = compile_packages.load(key)
    if run is None:
        return None
    example = nuts_pair_example(potential_and_grad, z, potential, grad, step_size, inverse_mass,
                                max_tree_depth, max_delta_energy)

    def check(args: tuple[Any, ...]) -> _Packaged | None:
        want = example.pair(*args)
        packaged = _Packaged(run, [_arg_spec(o) for o in want])
        return packaged if compilation.outputs_close(packaged(*args), want) else None

    pair = with_finite_example(check, example)
    if pair is None:
        warnings.warn("bayesact: the compiled NUTS package disagrees with the eager step on this run's "
                      "state; compiling instead", compilation.CompileFallbackWarning, stacklevel=2)
        return None
    return NutsKernels(_Counted(example.leaf, counter, 1), _Counted(pair, counter, 2), merge_and_start)


def rebuild_gradient(meta: dict[str, Any], constants: dict[str, torch.Tensor]) -> Callable[..., Any]:
    """The gradient graph shipped by :func:`build_files` (its ``graph.json`` and the constants of
    its ``tensors.pt``) as a function of z: the graph's code run with its constants."""
    namespace = dict(_GLOBALS)
    exec(compile(meta["code"], "<bayesact gradient graph>", "exec"), namespace)  # our own graph's code
    return functools.partial(namespace["forward"], types.SimpleNamespace(**constants))


def main(argv: list[str]) -> int:
    """The worker: ``SPEC_DIR PACKAGE RECORD LOCK`` (see :func:`bayesact.compile_packages.start_build`)."""
    start = time.perf_counter()
    spec, package, record, lock = (Path(a) for a in argv)
    try:
        with contextlib.suppress(AttributeError, OSError):  # no nice() on Windows
            os.nice(10)
        torch.set_num_threads(1)
        compilation.use_persistent_cache()
        meta = json.loads((spec / "graph.json").read_text())
        tensors = torch.load(spec / "tensors.pt", weights_only=True)  # written by our parent run
        grad_fn = rebuild_gradient(meta, tensors["constants"])
        state = tensors["state"]
        example = nuts_pair_example(grad_fn, state["z"], state["potential"], state["grad"],
                                    state["step_size"], state["inverse_mass"], meta["max_tree_depth"],
                                    meta["max_delta_energy"])
        trace = with_finite_example(lambda args: trace_flat(example.pair, args), example)
        flat = [t.contiguous() for t in trace.flat]
        with warnings.catch_warnings():
            warnings.simplefilter("ignore")
            program = torch.export.export(trace.graph, tuple(flat), strict=False)

        def build(path: str) -> None:
            compilation.settle_vec_isa()
            with torch._inductor.config.patch(trace.settings), warnings.catch_warnings():
                warnings.simplefilter("ignore")
                torch._inductor.aoti_compile_and_package(program, package_path=path)

        def check(run: Callable[[list[torch.Tensor]], list[torch.Tensor]]) -> bool:
            return compilation.outputs_close(run(flat), trace.graph(*flat))

        built = compile_packages.finish_build(build, check, package, record, start)
        if not built:
            compile_packages.mark_failed(record, "the compiled package disagrees with eager")
        print(f"bayesact package {'built' if built else 'REJECTED (disagrees with eager)'} in "
              f"{time.perf_counter() - start:.1f} s", flush=True)
        return 0 if built else 1
    except BaseException:
        compile_packages.mark_failed(record, traceback.format_exc())
        raise
    finally:
        compile_packages.cleanup([spec, lock])

