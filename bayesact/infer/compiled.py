"""Guard-free compilation of pure tensor functions: ``make_fx`` then TorchInductor.

``torch.compile`` checks Dynamo guards on every argument at every call; for a NUTS leaf with
some 25 tensor arguments that costs as much as a small model's gradient. The functions
compiled here are pure and always called with the same shapes, dtypes and layouts (the
sampler's state), so they are traced once to a graph of ATen operations
(``torch.fx.experimental.proxy_tensor.make_fx``) and handed to TorchInductor directly
(``torch._inductor.compile``), which checks only sizes and strides. A call with another
layout recompiles; the compiled result is checked against the eager function once (against
the traced graph when :mod:`bayesact.infer.fast_math` rewrote float32 CPU ``tanh`` in it).
"""

from __future__ import annotations

import functools
import time
import warnings
from collections.abc import Callable, Sequence
from typing import Any

import torch

from bayesact.infer.fast_math import FastMath
from bayesact.infer.integrator import (
    IntegratorState,
    Metric,
    PotentialAndGrad,
    is_numerical_failure,
    velocity,
)
from bayesact.infer.nuts_tree import (
    NutsKernels,
    merge_and_start,
    pair_table,
    slot_table,
    subtree_leaf,
    subtree_leaf_pair,
    subtree_start,
    tree_init,
)

__all__ = ["CompiledFunction", "compile_nuts_kernels", "detach_constants", "outputs_close"]


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


def _largest_finite(tensors: Sequence[torch.Tensor]) -> float:
    largest = 0.0
    for t in tensors:
        if t.is_floating_point() and t.numel():
            finite = t[torch.isfinite(t)]
            if finite.numel():
                largest = max(largest, float(finite.abs().max()))
    return largest


def outputs_close(got: Sequence[torch.Tensor], ref: Sequence[torch.Tensor], dtype: torch.dtype) -> bool:
    """Same shapes and dtypes, equal flags, floats within ``rtol·(1 + max|ref|) + 64·eps·S``
    where finite, S the largest finite |value| of any output: an output computed from a
    difference of large ones (a NUTS leaf's acceptance from energies of 1e4) keeps only the
    absolute precision of those."""
    rtol = 1e-4 if dtype != torch.float64 else 1e-9
    cancellation = 64 * torch.finfo(dtype).eps * _largest_finite(ref)
    for a, b in zip(got, ref, strict=True):
        if a.shape != b.shape or a.dtype != b.dtype:
            return False
        if not b.is_floating_point():
            if not torch.equal(a, b):
                return False
            continue
        finite = torch.isfinite(b)
        if not torch.equal(finite, torch.isfinite(a)) or not torch.equal(a[~finite], b[~finite]):
            return False
        scale = b[finite].abs().max() if finite.any() else b.new_ones(())
        if ((a[finite] - b[finite]).abs() > rtol * (1 + scale) + cancellation).any():
            return False
    return True


class CompiledFunction:
    """A pure function of tensors and NamedTuples of tensors, compiled once by TorchInductor.

    Args:
        fn: the pure function (returns a tensor, or a tuple of tensors and NamedTuples).
        example_args: arguments with the shapes, dtypes and layouts of the real calls.
        fast_math: replace float32 CPU ``tanh`` by :func:`~bayesact.infer.fast_math.rational_tanh`
            (error ≤ 5.3 ulp; several times faster on the CPU).

    Raises:
        RuntimeError: when tracing or compilation fails, or the compiled function disagrees
            with ``fn`` at ``example_args``.

    Attributes:
        compile_seconds: time spent tracing and compiling (all layouts so far).
    """

    def __init__(
        self, fn: Callable[..., Any], example_args: Sequence[Any], fast_math: bool = True
    ) -> None:
        self.fn = fn
        self.fast_math = fast_math
        self.in_spec = [_arg_spec(a) for a in example_args]
        ref = fn(*example_args)
        self.single = isinstance(ref, torch.Tensor)
        outs = (ref,) if self.single else tuple(ref)
        self.out_spec = [_arg_spec(o) for o in outs]
        self.compile_seconds = 0.0
        flat = _flatten(example_args)
        self._compiled, traced = self._compile(flat, reference=True)
        got = self._compiled(*flat)
        dtype = next((t.dtype for t in flat if t.is_floating_point()), torch.float32)
        # with fast math the traced graph computes (slightly) different numbers than ``fn``:
        # check Inductor against that graph run eagerly (a NUTS leaf's accept and U-turn flags
        # can flip on a last-digit difference); the approximations have their own tests
        expected = traced if traced is not None else _flatten(outs)
        if not outputs_close(got, expected, dtype):
            raise RuntimeError("the compiled function disagrees with the eager one")

    def _flat_fn(self, *flat: torch.Tensor) -> list[torch.Tensor]:
        out = self.fn(*_unflatten(flat, self.in_spec))
        return _flatten((out,) if self.single else out)

    def _compile(
        self, flat: list[torch.Tensor], reference: bool = False
    ) -> tuple[Callable[..., list[torch.Tensor]], list[torch.Tensor] | None]:
        """The compiled function and, with ``reference`` and when fast math rewrote the graph,
        the traced graph's eager outputs at ``flat`` (run before Inductor sees the graph)."""
        from torch.fx.experimental.proxy_tensor import make_fx

        # make_fx tracks tensors by identity: a tensor passed twice (a one-point tree has the
        # same tensors at both ends) would become one graph input read for both arguments,
        # and later calls with distinct tensors would silently compute with the wrong one
        flat = _distinct(flat)
        t0 = time.perf_counter()
        with warnings.catch_warnings():
            warnings.simplefilter("ignore")
            fast_math = FastMath(self.fast_math)
            graph = detach_constants(make_fx(self._flat_fn, decomposition_table=fast_math.table)(*flat))
            traced = list(graph(*flat)) if reference and fast_math.rewrites else None
            with torch._inductor.config.patch(fast_math.inductor_settings()):
                compiled = torch._inductor.compile(graph, [*flat])
        self.compile_seconds += time.perf_counter() - t0
        return compiled, traced

    def __call__(self, *args: Any) -> Any:
        flat = _flatten(args)
        try:
            out = self._compiled(*flat)
        except AssertionError:  # Inductor's size/stride check: another layout, compile again
            self._compiled, _ = self._compile(flat)
            out = self._compiled(*flat)
        if self.single:
            return out[0]
        return _unflatten(out, self.out_spec)


class _Counted:
    """Adds ``gradients`` to ``counter.calls`` at every call (a Python int: no device work)."""

    def __init__(self, fn: Callable[..., Any], counter: Any, gradients: int) -> None:
        self.fn = fn
        self.counter = counter
        self.gradients = gradients

    def __call__(self, *args: Any) -> Any:
        self.counter.calls += self.gradients
        return self.fn(*args)


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
) -> tuple[NutsKernels, float]:
    """Compile the leaf, pair-of-leaves and doubling-boundary steps of NUTS for this state.

    ``potential_and_grad`` (the captured gradient graph) is inlined into the leaves, so one
    call runs one (or two) leapfrog steps with all the tree bookkeeping. The example inputs
    are built from the sampler's state as a transition builds them, so the real calls have
    the same layouts. Returns the kernels (leaves counted on ``counter.calls``) and the
    compile time in seconds. When an example leaf steps where the potential raises a numerical
    failure (e.g. a Cholesky of a non-PD matrix), it is built again with a zero step (at a
    point where the potential is finite); at run time such a failure inside a compiled leaf
    is redone by the eager leaf (see :func:`~bayesact.infer.hmc_core.nuts_transition`).
    """
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

    def compiled(fn: Callable[..., Any], example: Callable[[torch.Tensor], tuple]) -> CompiledFunction:
        try:
            return CompiledFunction(fn, example(signed_step))
        except Exception as exc:  # re-raised below unless numerical
            if not is_numerical_failure(exc):
                raise
        return CompiledFunction(fn, example(signed_step * 0.0))

    leaf = compiled(functools.partial(subtree_leaf, **opts),
                    lambda step: (sub, tree.active, step, inverse_mass, energy0, log_u[0], store, check))
    sub1, _ = leaf(sub, tree.active, signed_step * 0.0, inverse_mass, energy0, log_u[0], store, check)
    pstore, pcheck = pair_table(slots, z.device)[0]
    pair = compiled(functools.partial(subtree_leaf_pair, **opts),
                    lambda step: (sub1, tree.active, step, inverse_mass, energy0, log_u[:2], pstore, pcheck))
    merge = CompiledFunction(merge_and_start, (tree, sub1, forward, log_u[2], ~forward, step_size, energy0))
    kernels = NutsKernels(_Counted(leaf, counter, 1), _Counted(pair, counter, 2), merge)
    return kernels, leaf.compile_seconds + pair.compile_seconds + merge.compile_seconds
