"""Guard-free compilation of pure tensor functions: ``make_fx`` then TorchInductor or TorchScript.

``torch.compile`` checks Dynamo guards on every argument at every call; for a NUTS leaf with
some 25 tensor arguments that costs as much as a small model's gradient. The functions
compiled here are pure and always called with the same shapes, dtypes and layouts (the
sampler's state), so they are traced once to a graph of ATen operations
(``torch.fx.experimental.proxy_tensor.make_fx``) and handed to TorchInductor directly
(``torch._inductor.standalone_compile`` with shapes from the example inputs: its shape
environment lets Inductor's FX-graph cache keep the compiled graphs across processes, which
plain ``torch._inductor.compile`` of a ``make_fx`` graph bypasses), which checks only sizes
and strides. A call with another layout recompiles. Compiling goes through
:func:`bayesact.compilation.compiled` (the library's one compile policy: persistent private
cache, the compiled graph verified against the traced graph run eagerly, one
:class:`~bayesact.compilation.CompileFallbackWarning` per failure, ``BAYESACT_COMPILE=0``
honoured). :class:`ScriptedFunction` traces a function to TorchScript instead
(:func:`bayesact.compilation.torchscript`: milliseconds to build, the same ATen kernels as the
function run eagerly, without Python's cost per operation).
"""

from __future__ import annotations

import contextlib
import functools
import hashlib
import threading
import time
import warnings
from collections.abc import Callable, Sequence
from typing import Any, Literal, NamedTuple

import torch

from bayesact import compilation
from bayesact.infer.fast_math import FastMath
from bayesact.infer.graph_passes import fetch_attr
from bayesact.infer.integrator import (
    IntegratorState,
    Metric,
    PotentialAndGrad,
    is_numerical_failure,
    velocity,
)
from bayesact.infer.nuts_tree import (
    NutsKernels,
    SubtreeState,
    merge_and_start,
    pair_table,
    slot_table,
    subtree_leaf,
    subtree_leaf_pair,
    subtree_start,
    tree_init,
)

__all__ = [
    "CompileFailed", "CompiledFunction", "FlatTrace", "PairExample", "ScriptedFunction",
    "compile_nuts_kernels", "detach_constants", "nuts_kernels_key", "nuts_pair_example", "trace_flat",
    "with_finite_example",
]


def detach_constants(graph: torch.fx.GraphModule) -> torch.fx.GraphModule:
    """Make the constant tensors of a ``make_fx`` graph that require grad (model parameters it
    read) detached views of the same storage, in place; returns ``graph``.

    The graphs here are pure functions that compute any gradient inside; run again, they must
    not record autograd history. torch 2.14 no longer records ``aten.detach`` in ``make_fx``
    graphs (2.13 does), so a model reading ``parameter.detach()`` gave a graph whose outputs
    require grad, and a sampler feeding its gradients back into its state built one autograd
    graph over the whole run (gigabytes within a few hundred NUTS iterations).
    """
    for qualname, tensor in [*graph.named_parameters(), *graph.named_buffers()]:
        if not tensor.requires_grad:
            continue
        owner_name, _, name = qualname.rpartition(".")
        owner = graph.get_submodule(owner_name)
        owner._parameters.pop(name, None)
        owner._buffers[name] = tensor.detach()
    return graph


def _arg_spec(arg: Any) -> type | None:
    """``None`` for a tensor, the NamedTuple type for a NamedTuple of tensors."""
    if isinstance(arg, torch.Tensor):
        return None
    if isinstance(arg, tuple) and hasattr(arg, "_fields"):
        return type(arg)
    raise TypeError(f"compiled functions take tensors and NamedTuples of tensors, got {type(arg)}")


def _flatten(args: Sequence[Any]) -> list[torch.Tensor]:
    flat: list[torch.Tensor] = []
    for a in args:
        if isinstance(a, torch.Tensor):
            flat.append(a)
        else:
            flat.extend(a)
    return flat


def _unflatten(flat: Sequence[torch.Tensor], spec: Sequence[type | None]) -> tuple:
    out: list[Any] = []
    i = 0
    for kind in spec:
        if kind is None:
            out.append(flat[i])
            i += 1
        else:
            n = len(kind._fields)  # type: ignore[attr-defined]
            out.append(kind(*flat[i : i + n]))
            i += n
    return tuple(out)


def _distinct(flat: Sequence[torch.Tensor]) -> list[torch.Tensor]:
    """``flat`` with every repeated tensor object replaced by a copy."""
    seen: set[int] = set()
    out = []
    for t in flat:
        out.append(t.clone() if id(t) in seen else t)
        seen.add(id(out[-1]))
    return out


class CompileFailed(RuntimeError):
    """The function could not be compiled (the reason was already warned, once, as a
    :class:`bayesact.compilation.CompileFallbackWarning`)."""


class _InductorLayouts:
    """A graph compiled by TorchInductor for each argument layout it meets: Inductor checks only
    sizes and strides, and a call with another layout compiles again, once per layout (the
    compiled functions of all layouts are kept, so alternating layouts never recompile)."""

    def __init__(self, graph: torch.fx.GraphModule, example: Sequence[torch.Tensor],
                 settings: dict[str, Any]) -> None:
        self.graph = graph
        self.settings = settings
        self.seconds = 0.0
        self._fn = self._compile(example)
        self._by_layout = {_layout(example): self._fn}

    def _compile(self, flat: Sequence[torch.Tensor]) -> Callable[..., Any]:
        t0 = time.perf_counter()
        # standalone_compile with shapes from the example inputs gives Inductor a shape
        # environment, without which its FX-graph cache is bypassed ("No shape env"): with it a
        # second process loads the compiled graph from the cache (constants are keyed by value)
        with torch._inductor.config.patch(self.settings):
            fn = torch._inductor.standalone_compile(self.graph, [*flat], dynamic_shapes="from_example_inputs")
        self.seconds += time.perf_counter() - t0
        return fn

    def __call__(self, *flat: torch.Tensor) -> Any:
        try:
            return self._fn(*flat)
        except AssertionError:  # Inductor's size/stride check: another layout
            layout = _layout(flat)
            if layout not in self._by_layout:
                self._by_layout[layout] = self._compile(flat)
            self._fn = self._by_layout[layout]
            return self._fn(*flat)


def _layout(flat: Sequence[torch.Tensor]) -> tuple:
    return tuple((t.shape, t.stride(), t.dtype, t.device) for t in flat)


class FlatTrace(NamedTuple):
    """A pure function of tensors and NamedTuples of tensors traced to a graph of ATen
    operations on flat tensor lists (:func:`trace_flat`)."""

    graph: torch.fx.GraphModule  # flat tensors in, flat tensors out
    flat: list[torch.Tensor]  # the example arguments, flattened (repeated tensors copied)
    in_spec: list[type | None]  # per argument: None (a tensor) or its NamedTuple type
    out_spec: list[type | None]  # the same for the outputs
    single: bool  # the function returns one tensor
    settings: dict[str, Any]  # Inductor settings the graph's fast math needs

    def unflatten(self, out: Sequence[torch.Tensor]) -> Any:
        """The function's result from the graph's flat outputs."""
        return out[0] if self.single else _unflatten(out, self.out_spec)


class _FlatFunction(NamedTuple):
    """``fn`` as a function of flat tensor lists, with example inputs and the specs to undo it."""

    fn: Callable[..., list[torch.Tensor]]
    flat: list[torch.Tensor]
    in_spec: list[type | None]
    out_spec: list[type | None]
    single: bool


def _flat_function(fn: Callable[..., Any], example_args: Sequence[Any]) -> _FlatFunction:
    in_spec = [_arg_spec(a) for a in example_args]
    ref = fn(*example_args)
    single = isinstance(ref, torch.Tensor)
    out_spec = [_arg_spec(o) for o in ((ref,) if single else tuple(ref))]

    def flat_fn(*flat: torch.Tensor) -> list[torch.Tensor]:
        out = fn(*_unflatten(flat, in_spec))
        return _flatten((out,) if single else out)

    # tracers track tensors by identity: a tensor passed twice (a one-point tree has the
    # same tensors at both ends) would become one graph input read for both arguments,
    # and later calls with distinct tensors would silently compute with the wrong one
    return _FlatFunction(flat_fn, _distinct(_flatten(example_args)), in_spec, out_spec, single)


def trace_flat(fn: Callable[..., Any], example_args: Sequence[Any], fast_math: bool = True) -> FlatTrace:
    """``fn`` traced at ``example_args`` with ``make_fx`` to a graph on flat tensor lists (float32
    CPU ``tanh`` rewritten by :mod:`~bayesact.infer.fast_math` when ``fast_math``; constants that
    require grad detached, see :func:`detach_constants`)."""
    from torch.fx.experimental.proxy_tensor import make_fx

    flat = _flat_function(fn, example_args)
    # the warning filters are process-wide: only the main thread silences tracing chatter
    main = threading.current_thread() is threading.main_thread()
    with warnings.catch_warnings() if main else contextlib.nullcontext():
        if main:
            warnings.simplefilter("ignore")
        math = FastMath(fast_math)
        graph = detach_constants(make_fx(flat.fn, decomposition_table=math.table)(*flat.flat))
    return FlatTrace(graph, flat.flat, flat.in_spec, flat.out_spec, flat.single, math.inductor_settings())


Backend = Literal["inductor", "torchscript"]


class CompiledFunction:
    """A pure function of tensors and NamedTuples of tensors, compiled once by TorchInductor
    through :func:`bayesact.compilation.compiled` (one cache, one verification, one warning).

    ``fn`` is traced to a graph of ATen operations (:func:`trace_flat`: ``make_fx``; float32 CPU
    ``tanh`` rewritten by :mod:`~bayesact.infer.fast_math` when ``fast_math``), and that graph is
    compiled and verified against itself run eagerly (with fast math the graph computes
    slightly different numbers than ``fn``; a NUTS leaf's accept and U-turn flags can flip on a
    last-digit difference; the approximation has its own tests).

    Args:
        fn: the pure function (returns a tensor, or a tuple of tensors and NamedTuples).
        example_args: arguments with the shapes, dtypes and layouts of the real calls.
        fast_math: replace float32 CPU ``tanh`` by :func:`~bayesact.infer.fast_math.rational_tanh`
            (error ≤ 5.3 ulp; several times faster on the CPU).
        name: the name of the compiled function in warnings and
            :func:`bayesact.compilation.fallbacks`.

    Raises:
        CompileFailed: when tracing or compilation fails, the compiled function disagrees with
            the traced graph at ``example_args``, or compilation is off (``BAYESACT_COMPILE=0``).

    Attributes:
        compile_seconds: time spent tracing and compiling (all layouts so far).
        trace: the :class:`FlatTrace` that was compiled.
    """

    def __init__(
        self, fn: Callable[..., Any], example_args: Sequence[Any], fast_math: bool = True,
        name: str = "infer_function",
    ) -> None:
        if not compilation.is_enabled():
            raise CompileFailed(f"compilation is off ({compilation.ENV_VAR}=0 or set_enabled(False))")
        self.fn = fn
        self.fast_math = fast_math
        t0 = time.perf_counter()
        self.trace = trace_flat(fn, example_args, fast_math)
        self.graph = self.trace.graph
        layouts: list[_InductorLayouts] = []

        def compiler(graph: Callable[..., Any], example: tuple[Any, ...]) -> Callable[..., Any]:
            layouts.append(_InductorLayouts(self.graph, example, self.trace.settings))
            return layouts[-1]

        self._compiled = compilation.compiled(self.graph, name=name, compiler=compiler)
        ready = self._compiled.prepare(*self.trace.flat)
        self._layouts = layouts
        self._trace_seconds = time.perf_counter() - t0 - sum(x.seconds for x in layouts)
        if not ready:
            raise CompileFailed(self._compiled.fallback_reason or "compilation is off")

    @property
    def compile_seconds(self) -> float:
        return self._trace_seconds + sum(x.seconds for x in self._layouts)

    def __call__(self, *args: Any) -> Any:
        return self.trace.unflatten(self._compiled.run(*_flatten(args)))


class ScriptedFunction:
    """A pure, shape-static function of tensors and NamedTuples of tensors traced to TorchScript
    through :func:`bayesact.compilation.compiled` with :func:`bayesact.compilation.torchscript`
    (verified against ``fn`` itself; one warning on failure; ``BAYESACT_COMPILE=0`` honoured).

    ``torch.jit.trace`` records the ATen operations ``fn`` runs at ``example_args`` directly (a
    few tens of milliseconds, against ~0.5 s for ``make_fx``), so the traced function computes
    what ``fn`` computes with the same kernels, in TorchScript's C++ interpreter. Attributes:
    ``compile_seconds`` (tracing and verification).

    Raises:
        CompileFailed: as :class:`CompiledFunction`.
    """

    def __init__(
        self, fn: Callable[..., Any], example_args: Sequence[Any], name: str = "infer_function"
    ) -> None:
        if not compilation.is_enabled():
            raise CompileFailed(f"compilation is off ({compilation.ENV_VAR}=0 or set_enabled(False))")
        t0 = time.perf_counter()
        self.flat = flat = _flat_function(fn, example_args)

        def flat_tuple(*tensors: torch.Tensor) -> tuple[torch.Tensor, ...]:
            return tuple(flat.fn(*tensors))  # a tuple: the tracer warns about a list's structure

        self._compiled = compilation.compiled(flat_tuple, name=name, compiler=compilation.torchscript,
                                              inductor=False)
        ready = self._compiled.prepare(*self.flat.flat)
        self.compile_seconds = time.perf_counter() - t0
        if not ready:
            raise CompileFailed(self._compiled.fallback_reason or "compilation is off")

    def __call__(self, *args: Any) -> Any:
        out = self._compiled.run(*_flatten(args))
        return out[0] if self.flat.single else _unflatten(out, self.flat.out_spec)


def _outputless_operations(graph: torch.fx.GraphModule) -> list[str]:
    """The ATen operations of ``graph`` that return nothing: error checks such as
    ``aten._linalg_check_errors`` (what makes ``torch.linalg.cholesky`` raise) or
    ``aten._assert_async``, which a TorchScript trace removes as dead code."""
    return sorted({str(n.target) for n in graph.graph.nodes
                   if n.op == "call_function" and isinstance(n.target, torch._ops.OpOverload)
                   and not n.target._schema.returns})


class _Counted:
    """Adds ``gradients`` to ``counter.calls`` at every call (a Python int: no device work)."""

    def __init__(self, fn: Callable[..., Any], counter: Any, gradients: int) -> None:
        self.fn = fn
        self.counter = counter
        self.gradients = gradients

    def __call__(self, *args: Any) -> Any:
        self.counter.calls += self.gradients
        return self.fn(*args)


class PairExample(NamedTuple):
    """The eager NUTS leaf and pair-of-leaves steps for one sampler state, and example arguments
    of the pair built from that state as a transition builds them (so the real calls have the
    same layouts): ``args(signed_step)``, with ``signed_step`` the state's own."""

    leaf: Callable[..., tuple[SubtreeState, torch.Tensor]]
    pair: Callable[..., tuple[SubtreeState, torch.Tensor]]
    args: Callable[[torch.Tensor], tuple[Any, ...]]
    signed_step: torch.Tensor


def nuts_pair_example(
    potential_and_grad: PotentialAndGrad,
    z: torch.Tensor,
    potential: torch.Tensor,
    grad: torch.Tensor,
    step_size: torch.Tensor,
    inverse_mass: torch.Tensor,
    max_tree_depth: int,
    max_delta_energy: float,
) -> PairExample:
    """The :class:`PairExample` of this state: one tree started from (z, potential, grad) with
    a fixed-seed momentum, its first leaf taken with a zero step."""
    c, d = z.shape
    slots = max(max_tree_depth, 1)
    gen = torch.Generator(device=z.device).manual_seed(0)
    r0 = torch.randn(c, d, generator=gen, dtype=z.dtype, device=z.device)
    v0 = velocity(Metric(inverse_mass, inverse_mass), r0)
    energy0 = potential + 0.5 * (r0 * v0).sum(-1)
    tree = tree_init(IntegratorState(z, r0, potential, grad), v0, energy0)
    zeros = torch.zeros(c, dtype=z.dtype, device=z.device)
    ckpt = z.new_zeros(slots, c, d)
    forward = torch.arange(c, device=z.device) % 2 == 0
    sub, signed_step = subtree_start(tree, forward, step_size, energy0, zeros, zeros.clone(), ckpt,
                                     ckpt.clone())
    log_u = torch.rand(3, c, generator=gen, dtype=z.dtype, device=z.device).log()
    opts: dict[str, Any] = {"potential_and_grad": potential_and_grad, "max_delta_energy": max_delta_energy}
    store, check = slot_table(slots, z.device)[0]
    leaf: Callable[..., tuple[SubtreeState, torch.Tensor]] = functools.partial(subtree_leaf, **opts)
    sub1, _ = leaf(sub, tree.active, signed_step * 0.0, inverse_mass, energy0, log_u[0], store, check)
    pstore, pcheck = pair_table(slots, z.device)[0]
    pair: Callable[..., tuple[SubtreeState, torch.Tensor]] = functools.partial(subtree_leaf_pair, **opts)
    return PairExample(
        leaf, pair,
        lambda step: (sub1, tree.active, step, inverse_mass, energy0, log_u[:2], pstore, pcheck),
        signed_step,
    )


def with_finite_example(build: Callable[[tuple[Any, ...]], Any], example: PairExample) -> Any:
    """``build(example.args(signed_step))``; when that raises a numerical failure (the example
    leaf stepped where the potential fails, e.g. a Cholesky of a non-PD matrix), built again
    with a zero step (at a point where the potential is finite)."""
    try:
        return build(example.args(example.signed_step))
    except Exception as exc:  # re-raised below unless numerical
        if not is_numerical_failure(exc):
            raise
    return build(example.args(example.signed_step * 0.0))


def compile_nuts_kernels(
    potential_and_grad: PotentialAndGrad,
    z: torch.Tensor,
    potential: torch.Tensor,
    grad: torch.Tensor,
    step_size: torch.Tensor,
    inverse_mass: torch.Tensor,
    max_tree_depth: int,
    max_delta_energy: float,
    counter: Any,
    backend: Backend = "inductor",
) -> tuple[NutsKernels, float]:
    """Compile the pair-of-leaves step of NUTS for this state: with TorchInductor
    (:class:`CompiledFunction`) or, ``backend="torchscript"``, with TorchScript
    (:class:`ScriptedFunction`; refused, :class:`CompileFailed`, when ``potential_and_grad`` is not
    a graph or has operations without outputs, which a trace would drop).

    ``potential_and_grad`` (the captured gradient graph) is inlined, so one call runs two
    leapfrog steps with all the tree bookkeeping. Only the pair is compiled: it runs all but
    one leaf of every tree of depth ≥ 2, while the single first leaf and the doubling
    boundaries (under 10 calls per transition) run eagerly (the captured gradient graph, the
    pure steps of :mod:`~bayesact.infer.nuts_tree`); compiling them too cost about as much
    compile time again (three graphs instead of one) for well under 1 % of the sampling time.
    The example inputs come from :func:`nuts_pair_example`. Returns the kernels (leaves counted
    on ``counter.calls``) and the compile time in seconds. A numerical failure at the example
    is handled by :func:`with_finite_example`; at run time such a failure inside a compiled
    leaf is redone by the eager leaf (see :func:`~bayesact.infer.hmc_core.nuts_transition`).
    """
    example = nuts_pair_example(potential_and_grad, z, potential, grad, step_size, inverse_mass,
                                max_tree_depth, max_delta_energy)
    pair: CompiledFunction | ScriptedFunction
    if backend == "inductor":
        pair = with_finite_example(lambda args: CompiledFunction(example.pair, args, name="nuts_leaf_pair"),
                                   example)
    else:
        dropped = (_outputless_operations(potential_and_grad)
                   if isinstance(potential_and_grad, torch.fx.GraphModule) else ["(not a graph)"])
        if dropped:
            raise CompileFailed(f"TorchScript's trace would drop the potential's operations without "
                                f"outputs {dropped} (error checks such as a failed Cholesky's)")
        pair = with_finite_example(
            lambda args: ScriptedFunction(example.pair, args, name="nuts_leaf_pair_torchscript"), example)
    kernels = NutsKernels(_Counted(example.leaf, counter, 1), _Counted(pair, counter, 2), merge_and_start)
    return kernels, pair.compile_seconds


def _tensor_digest(t: torch.Tensor) -> bytes:
    data = torch.empty(t.numel(), dtype=t.dtype)  # stride 1 whatever the layout (expanded scalars)
    data.copy_(t.detach().reshape(-1))
    data = data.view(torch.uint8)
    return f"{t.dtype}{tuple(t.shape)}".encode() + hashlib.sha256(data.numpy().tobytes()).digest()


def nuts_kernels_key(
    graph: torch.fx.GraphModule, z: torch.Tensor, max_tree_depth: int, max_delta_energy: float
) -> str:
    """What :func:`compile_nuts_kernels` compiles for this gradient graph and state, as a string:
    the graph's code, the values of its constant tensors (data, folded constants), the state's
    shape, dtype and device, and the tree settings. Equal keys give the same Inductor cache
    entries, so :func:`bayesact.compilation.compile_record` under this key says whether they are
    on this machine."""
    h = hashlib.sha256(graph.code.encode())
    for node in graph.graph.nodes:
        if node.op == "get_attr":
            value = fetch_attr(graph, str(node.target))
            if isinstance(value, torch.Tensor):
                h.update(_tensor_digest(value))
    return (f"nuts_kernels/{h.hexdigest()}/{tuple(z.shape)}/{z.dtype}/{z.device}/"
            f"{max_tree_depth}/{max_delta_energy}")
