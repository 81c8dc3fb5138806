"""NNGP and NTK of deep fully connected networks: the layer recursion, blocked and optionally fused.

Conventions are neural-tangents' ``stax.serial(*[Dense(W_std, b_std), act] * depth,
Dense(W_std, b_std))`` in the NTK parameterization ("Neural Tangents: Fast and Easy Infinite Neural
Networks in Python", Novak et al., ICLR 2020):

    K⁰(x, x') = W_std²·⟨x, x'⟩/d + b_std²,                         Θ⁰ = K⁰
    K^{l+1}   = W_std²·T_φ(Λ^l) + b_std²,                          l = 0..depth−1
    Θ^{l+1}   = K^{l+1} + W_std²·Ṫ_φ(Λ^l)·Θ^l

with Λ^l = [[K^l(x,x), K^l(x,x')], [K^l(x,x'), K^l(x',x')]] ("Deep Neural Networks as Gaussian
Processes", Lee et al., ICLR 2018; "Neural Tangent Kernel", Jacot, Gabriel & Hongler, NeurIPS 2018).
``depth`` counts hidden layers; the readout layer is included, so depth = 0 is the linear kernel K⁰.
Per-layer stds (lists of depth + 1) put W_std,0, b_std,0 in K⁰ and W_std,l+1, b_std,l+1 in layer
l + 1 of the recursion (entry depth is the readout).

The diagonals K^l(x, x) are run first with the exact one-point maps. Given them, every off-diagonal
entry follows its own scalar recursion, so the n × m matrix is computed in row blocks under a memory
bound and, with ``fused=True``, each block runs all layers in one ``torch.compile``-generated kernel
(through :func:`bayesact.compilation.compiled`: verified against eager, one warning and the eager
path on failure, ``BAYESACT_COMPILE=0`` honoured). ``fused="auto"``, the default, runs eagerly at
once and, for outputs of at least ``AUTO_MIN_ENTRIES``, switches to the kernel once it has been built
in the background, one verified kernel per configuration.
When nothing requires gradients (no input, std or activation parameter does, or autograd is off)
the blocks are written into preallocated outputs, the Gram matrix is formed in one of them (each
block reads its rows before overwriting them), ``ntk`` never forms K as a matrix, and duals with
``pair_inplace`` (ReLU family, erf) work in a few reused, cache-sized block buffers: the same
operations in the same order as the autograd path, so the same numbers, without the page faults of
fresh temporaries. Otherwise blocks are computed out of place (checkpointed under autograd).
Blocked equals unblocked bit for bit: the Gram matrix ⟨x, x'⟩ is formed once for the whole output
(a matrix product of fewer rows may round differently), each block reads its rows, and everything
after it is elementwise, where torch's CPU kernels (and one compiled kernel, shared by all blocks
through dynamic shapes) give an entry the same value wherever it sits.
"""

from __future__ import annotations

import atexit
import itertools
import math
import time
import warnings
import weakref
from collections.abc import Sequence
from dataclasses import dataclass, field
from typing import Any, Literal

import torch
from torch import Tensor
from torch.utils.checkpoint import checkpoint

from bayesact import compilation
from bayesact.infer.tracing import is_concrete
from bayesact.kernels._docs import args_section, document, raises_section
from bayesact.kernels.dual import DualActivation, PointData, Scratch, write_into
from bayesact.kernels.resolve import ActivationLike, dual_activation

__all__ = [
    "DEFAULT_BIAS_STD", "DEFAULT_BLOCK_BYTES", "DEFAULT_WEIGHT_STD", "KernelOverflowWarning", "nngp",
    "nngp_ntk", "ntk",
]

#: default bound on the working memory of one block of kernel entries
DEFAULT_BLOCK_BYTES = 64 * 2**20
#: defaults of W_std and b_std shared by nngp/ntk/nngp_ntk, the Monte Carlo estimators and the GPyTorch
#: kernels. b_std > 0: the stds enter only as squares, so b_std = 0 is a stationary point of any fitting
#: objective (a learned bias could never leave it) and GPyTorch's Positive() constraint cannot hold it.
DEFAULT_WEIGHT_STD = 1.0
DEFAULT_BIAS_STD = 0.1


class KernelOverflowWarning(RuntimeWarning):
    """The NNGP/NTK left the dtype's finite range (e.g. relu2 at depth 5 in float32)."""

Std = float | Tensor
#: one std shared by every Dense layer, or a list/tuple of depth + 1 per-layer stds
LayerStd = Std | Sequence[Std]


@dataclass
class _PointLayers:
    """Per-point quantities of every layer for one input set."""

    variances: list[Tensor]  # K^l(x, x) for l = 0..depth−1, each (..., n)
    data: list[PointData]  # the dual's per-point data at those variances
    final: Tensor  # K^depth(x, x)
    final_ntk: Tensor | None  # Θ^depth(x, x)


def _check_std(value: Std, name: str, x: Tensor, allow_zero: bool) -> Tensor:
    if isinstance(value, bool) or not isinstance(value, int | float | Tensor):
        raise TypeError(f"{name} must be a float or a tensor, got {type(value).__name__}")
    t = torch.as_tensor(value, dtype=x.dtype, device=x.device)
    if not is_concrete(t):  # traced (a captured graph): no values to check
        return t
    if not bool(torch.isfinite(t).all()):
        raise ValueError(f"{name} must be finite, got {value}")
    bad = (t < 0) if allow_zero else (t <= 0)
    if bool(bad.any()):
        need = ">= 0" if allow_zero else "> 0"
        raise ValueError(f"{name} must be {need}, got {value}")
    return t


def _layer_variances(value: LayerStd, name: str, x: Tensor, depth: int, allow_zero: bool) -> list[Tensor]:
    """[std_l²] for the Dense layers l = 0..depth (0: the input layer, depth: the readout)."""
    if isinstance(value, list | tuple):
        if len(value) != depth + 1:
            raise ValueError(
                f"{name} has {len(value)} entries; a per-layer {name} needs depth + 1 = {depth + 1} "
                "(input layer first, readout last)"
            )
        stds = [_check_std(v, f"{name}[{i}]", x, allow_zero) for i, v in enumerate(value)]
        return [s * s for s in stds]
    if isinstance(value, str) or not isinstance(value, int | float | Tensor):
        raise TypeError(
            f"{name} must be a float, a tensor, or a list/tuple of depth + 1 of them, got "
            f"{type(value).__name__}"
        )
    std = _check_std(value, name, x, allow_zero)
    return [std * std] * (depth + 1)


def _check_depth(depth: int) -> None:
    if isinstance(depth, bool) or not isinstance(depth, int):
        raise TypeError(f"depth must be an int, got {type(depth).__name__}")
    if depth < 0:
        raise ValueError(f"depth must be >= 0 (the number of hidden layers), got {depth}")


def _check_inputs(x1: Tensor, x2: Tensor | None, diag: bool) -> None:
    for name, x in (("x1", x1), ("x2", x2)):
        if x is None:
            continue
        if not isinstance(x, Tensor):
            raise TypeError(f"{name} must be a torch.Tensor, got {type(x).__name__}")
        if not x.is_floating_point():
            raise TypeError(f"{name} must be a floating-point tensor, got {x.dtype}")
        if x.dim() < 2:
            raise ValueError(f"{name} must have shape (..., n, d), got {tuple(x.shape)}")
        if x.shape[-1] == 0:
            raise ValueError(f"{name} must have at least one feature, got shape {tuple(x.shape)}")
        if is_concrete(x) and not bool(torch.isfinite(x).all()):  # a traced input has no values to read
            raise ValueError(f"{name} contains NaN or infinite values")
    if x2 is not None:
        if x2.shape[-1] != x1.shape[-1]:
            raise ValueError(
                f"x2 has {x2.shape[-1]} features but x1 has {x1.shape[-1]}; they must match"
            )
        if x2.dtype != x1.dtype or x2.device != x1.device:
            raise ValueError(
                f"x2 ({x2.dtype}, {x2.device}) must have x1's dtype and device "
                f"({x1.dtype}, {x1.device})"
            )
        if diag and x2.shape[-2] != x1.shape[-2]:
            raise ValueError(
                f"diag=True pairs x1 and x2 row by row: x2 has {x2.shape[-2]} rows, x1 has "
                f"{x1.shape[-2]}"
            )


def _point_layers(
    x: Tensor,
    dual: DualActivation,
    w2: list[Tensor],
    b2: list[Tensor],
    depth: int,
    with_ntk: bool,
) -> _PointLayers:
    w2v, b2v = [w.unsqueeze(-1) for w in w2], [b.unsqueeze(-1) for b in b2]
    k = w2v[0] * (x * x).sum(-1) / x.shape[-1] + b2v[0]
    theta = k if with_ntk else None
    variances, data = [], []
    for layer in range(1, depth + 1):
        point = dual.point_data(k, with_ntk)
        variances.append(k)
        data.append(point)
        k = w2v[layer] * point.diag + b2v[layer]
        if with_ntk:
            assert point.diag_dot is not None and theta is not None
            theta = k + w2v[layer] * point.diag_dot * theta
    return _PointLayers(variances, data, k, theta)


def _layers(
    gram: Tensor,
    rows: list[tuple[Tensor, tuple[Tensor, ...]]],
    cols: list[tuple[Tensor, tuple[Tensor, ...]]],
    w2: list[Tensor],
    b2: list[Tensor],
    d: int,
    dual: DualActivation,
    with_ntk: bool,
) -> tuple[Tensor, Tensor | None]:
    """K⁰ from the Gram block ⟨x, x'⟩, then the entrywise recursion over the hidden layers.

    Every operation is elementwise (k11 and its features broadcast along a row, k22 and its features
    along a column), so the value of an entry does not depend on which block it is computed in.
    """
    k12 = w2[0] * gram / d + b2[0]
    theta = k12 if with_ntk else None
    for layer, ((k11, f1), (k22, f2)) in enumerate(zip(rows, cols, strict=True), start=1):
        t, t_dot = dual.pair(k11, k22, k12, f1, f2, with_ntk)
        k12 = w2[layer] * t + b2[layer]
        if with_ntk:
            assert t_dot is not None and theta is not None
            theta = k12 + w2[layer] * t_dot * theta
    return k12, theta


Fused = bool | Literal["auto"]

#: the default of ``fused`` (functions and GPyTorch kernels)
DEFAULT_FUSED: Fused = "auto"

#: ``fused="auto"``: outputs with fewer entries (n·m, times any batch) always run eagerly
AUTO_MIN_ENTRIES = 65_536
#: ``fused="auto"``: a configuration starts its background compile only after its eager calls have
#: taken this many seconds in all (a short run never pays a compile competing with it for the CPU)
AUTO_MIN_EAGER_SECONDS = 2.0

#: the no-grad recursion of a dual that works in place, on CPU: at most this many entries a block, so
#: its five block-sized buffers (float32: 5 MiB) stay in cache through all layers. Measured (relu and erf,
#: nngp and ntk, n = 5000, one thread): 2^16 entries 8-17% and 2^24 12-40% more CPU time than 2^18
#: (per-operation overhead against cache misses)
INPLACE_BLOCK_ENTRIES = 2**18

#: Dynamo settings around compiling and running the recursion: a configuration's graphs (dynamic
#: shapes, grad on/off) stay well under the limits, after which Dynamo would silently run eagerly
_DYNAMO_CONFIG: dict[str, Any] = {"recompile_limit": 512, "accumulated_recompile_limit": 4096,
                                  "specialize_float": True}

#: the compiled layer recursion per (policy, configuration): each configuration (dual and its scalar
#: parameters, dtype, device, depth, NNGP/NTK, diag, autograd) is compiled and verified against eager
#: on its own inputs, so no configuration runs a compiled graph that was never checked
_compiled_layers: dict[tuple[Any, ...], compilation.Compiled] = {}
#: every compiled recursion built in this process (whichever cache holds it), for the exit handler
_every_compiled: weakref.WeakSet[compilation.Compiled] = weakref.WeakSet()
_MaybeCompiled = compilation.Compiled | None
#: ``fused="auto"``: the seconds each configuration has spent eagerly before its compile may start
_eager_seconds: weakref.WeakKeyDictionary[compilation.Compiled, float] = weakref.WeakKeyDictionary()


def _gated(fused: _MaybeCompiled) -> tuple[_MaybeCompiled, _MaybeCompiled]:
    """(the compiled recursion to use for this call, the one whose eager time this call adds to).

    ``fused="auto"`` holds a configuration eager (without advancing its compile policy) until its
    eager calls have taken ``AUTO_MIN_EAGER_SECONDS`` in all."""
    if (fused is None or fused.policy != "auto" or fused.state != "new"
            or _eager_seconds.get(fused, 0.0) >= AUTO_MIN_EAGER_SECONDS):
        return fused, None
    return None, fused


def _signature(value: Any) -> Any:
    """What Dynamo specialises a compiled ``_layers`` on, as a hashable key (values of Python
    scalars, tensors' dtype/device/rank/requires_grad, the dual's type and attributes)."""
    if isinstance(value, Tensor):
        return ("tensor", value.dtype, value.device.type, value.dim(), value.requires_grad)
    if value is None or isinstance(value, bool | int | float | str):
        return value
    if isinstance(value, list | tuple):
        return tuple(_signature(v) for v in value)
    if isinstance(value, dict):  # e.g. a rectified polynomial's coefficients by power
        return ("dict", tuple((k, _signature(v)) for k, v in sorted(value.items())))
    if isinstance(value, DualActivation):
        attrs = sorted(vars(value).items())
        return (type(value).__module__, type(value).__qualname__, tuple((k, _signature(v)) for k, v in attrs))
    return (type(value).__qualname__, id(value))  # anything else: this very object


def _compile_then_run_only(fn: Any, example: tuple[Any, ...]) -> Any:
    """``fused="auto"``'s compiler: ``torch.compile`` ``fn`` for ``example`` now (in the background
    thread), and return a function that runs the graphs built here and never compiles again: an
    input outside their guards runs ``fn`` eagerly instead of recompiling on the caller's thread
    (``torch._dynamo.run``), so no call waits for a compile and no unverified graph is used.
    Shapes are dynamic without duck sizing (an n × n example also serves n × m blocks)."""
    from torch.fx.experimental import _config as fx_config

    no_duck_sizing = fx_config.patch(use_duck_shape=False)  # type: ignore[attr-defined]  # set at import
    with torch._dynamo.config.patch(**_DYNAMO_CONFIG), no_duck_sizing:
        torch.compile(fn, dynamic=True)(*example)
    return torch._dynamo.run(fn)


class _CompileCancelled(Exception):
    """Raised inside a background compile of the recursion when the interpreter exits."""


def _cancel_background_compiles(timeout: float = 60.0) -> None:
    """At interpreter exit: stop the recursion's background compiles and wait for their threads.

    A daemon thread that is still compiling when Python finalizes is killed inside C++ code, which
    aborts the process ("terminate called without an active exception", exit status 134). Each live
    compile thread gets a ``_CompileCancelled`` raised at its next Python bytecode (re-raised every
    0.2 s, since a blocking C call delays it); the build then fails quietly (its eager fallback is
    never used: the process is exiting)."""
    import ctypes

    deadline = time.monotonic() + timeout
    for kernel in list(_every_compiled):
        thread = kernel._thread
        while thread is not None and thread.is_alive() and thread.ident is not None:
            ctypes.pythonapi.PyThreadState_SetAsyncExc(
                ctypes.c_ulong(thread.ident), ctypes.py_object(_CompileCancelled)
            )
            thread.join(0.2)
            if time.monotonic() > deadline:
                return


atexit.register(_cancel_background_compiles)


def _fused_layers(policy: compilation.Policy, args: tuple[Any, ...]) -> compilation.Compiled:
    """``_layers`` compiled through :func:`bayesact.compilation.compiled` for the configuration of
    ``args`` (one per policy and configuration)."""
    key = (policy, _signature(args), torch.is_grad_enabled())
    if key not in _compiled_layers:
        dual = args[6]
        _compiled_layers[key] = compilation.compiled(
            _layers, name=f"kernel_layers_{policy}_{type(dual).__name__}_{len(_compiled_layers)}",
            policy=policy, dynamic=True, dynamo_config=_DYNAMO_CONFIG,
            compiler=_compile_then_run_only if policy == "auto" else None,
        )
        _every_compiled.add(_compiled_layers[key])
    return _compiled_layers[key]


def _block_bounds(
    n: int, row_entries: int, entry_bytes: int, limit: int, cap: int | None
) -> list[int]:
    """Row boundaries [0, ..., n] of blocks under ``limit`` bytes (and ``cap`` entries), as even as
    possible (no block of one row next to big ones, which a compiled kernel would specialise)."""
    rows = limit // max(1, row_entries * entry_bytes)
    if cap is not None:
        rows = min(rows, cap // max(1, row_entries))
    rows = max(1, min(n, rows))
    blocks = max(1, -(-n // rows))  # n = 0 (no rows): one empty block, so shapes and grads carry
    return [(i * n) // blocks for i in range(blocks + 1)]


def _variances(
    weight_std: LayerStd, bias_std: LayerStd, x1: Tensor, depth: int
) -> tuple[list[Tensor], list[Tensor]]:
    """Per-layer (W_std², b_std²) for the Dense layers 0..depth, validated."""
    w2 = _layer_variances(weight_std, "weight_std", x1, depth, allow_zero=False)
    b2 = _layer_variances(bias_std, "bias_std", x1, depth, allow_zero=True)
    return w2, b2


@dataclass(frozen=True, eq=False)
class _Recursion:
    """What one NNGP/NTK evaluation computes, apart from its inputs: checked once, when built.

    The stds are checked (and converted to the inputs' dtype and device) by ``variances``, at
    evaluation, since a float std becomes a tensor of the inputs' dtype.
    """

    activation: ActivationLike
    depth: int
    weight_std: LayerStd = DEFAULT_WEIGHT_STD
    bias_std: LayerStd = DEFAULT_BIAS_STD
    quadrature_degree: int | None = None
    fused: Fused = DEFAULT_FUSED
    block_bytes: int | None = None
    dual: DualActivation = field(init=False, repr=False)

    def __post_init__(self) -> None:
        _check_depth(self.depth)
        if not isinstance(self.fused, bool) and self.fused != "auto":
            raise ValueError(f"fused must be True, False or 'auto', got {self.fused!r}")
        block_bytes = self.block_bytes
        if block_bytes is not None and (isinstance(block_bytes, bool) or block_bytes < 1):
            raise ValueError(f"block_bytes must be a positive integer, got {block_bytes!r}")
        dual = dual_activation(self.activation, quadrature_degree=self.quadrature_degree)
        object.__setattr__(self, "dual", dual)

    def variances(self, x: Tensor) -> tuple[list[Tensor], list[Tensor]]:
        """Per-layer (W_std², b_std²) for the Dense layers 0..depth in x's dtype and device."""
        return _variances(self.weight_std, self.bias_std, x, self.depth)


def _evaluate(
    x1: Tensor, x2: Tensor | None, spec: _Recursion, diag: bool, with_ntk: bool, want_k: bool = True
) -> tuple[Tensor | None, Tensor | None]:
    """(K, Θ or None) of ``spec`` at the inputs; warns when they overflowed. With ``want_k=False``
    (only Θ wanted) K may be None: without autograd it is then never formed as a matrix."""
    k, theta = _recursion(x1, x2, spec, diag, with_ntk, want_k)
    _warn_if_overflowed(k, theta, spec.activation, spec.depth)
    return k, theta


def _all_finite(t: Tensor) -> bool:
    """Whether every entry is finite, from its min and max (NaN propagates to both): no
    temporaries of t's size, unlike ``torch.isfinite(t).all()``."""
    if t.numel() == 0:
        return True
    low, high = torch.aminmax(t.detach())
    return bool(torch.isfinite(low) & torch.isfinite(high))


def _warn_if_overflowed(
    k: Tensor | None, theta: Tensor | None, activation: ActivationLike, depth: int
) -> None:
    """KernelOverflowWarning when K or Θ is not finite (inputs were checked finite, so it overflowed)."""
    present = [t for t in (k, theta) if t is not None]
    if not is_concrete(*present) or all(_all_finite(t) for t in present):
        return
    if isinstance(activation, str):
        name = activation
    else:
        name = getattr(activation, "name", None) or type(activation).__name__
    warnings.warn(
        f"the NNGP/NTK of {name!r} at depth {depth} overflowed {present[0].dtype} (non-finite entries): the "
        "kernel grows beyond the dtype's range through the layers; compute in float64 (x.double()), "
        "or reduce depth, weight_std or the input scale",
        KernelOverflowWarning,
        stacklevel=4,
    )


def _recursion(
    x1: Tensor, x2: Tensor | None, spec: _Recursion, diag: bool, with_ntk: bool, want_k: bool
) -> tuple[Tensor | None, Tensor | None]:
    start_time = time.perf_counter()
    _check_inputs(x1, x2, diag)
    dual, depth = spec.dual, spec.depth
    w2, b2 = spec.variances(x1)
    symmetric = x2 is None or x2 is x1 or (x2.shape == x1.shape and torch.equal(x1, x2))
    points1 = _point_layers(x1, dual, w2, b2, depth, with_ntk)
    if diag and symmetric:
        return points1.final, points1.final_ntk
    x2 = x1 if x2 is None else x2
    points2 = points1 if symmetric else _point_layers(x2, dual, w2, b2, depth, with_ntk)
    d = x1.shape[-1]
    policy: compilation.Policy = "auto" if spec.fused == "auto" else "always"
    entries = x1.shape[:-1].numel() * (1 if diag else x2.shape[-2])
    # "auto": a small kernel never compiles (a compile it could not amortise)
    wanted = spec.fused is True or (spec.fused == "auto" and entries >= AUTO_MIN_ENTRIES)
    fusable = wanted and dual.fusable
    fused: compilation.Compiled | None = None  # set from the first block's arguments
    decided: list[bool] = []  # one path for every block of this call (same numbers blockwise)

    def decide(*args: Any) -> None:
        """Compile (and verify) now if the policy says so, outside any checkpointed block: a
        checkpointed block must save the same tensors when autograd recomputes it."""
        if fused is not None and not decided:
            decided.append(fused.prepare(*args))

    def layers(*args: Any) -> tuple[Tensor, Tensor | None]:
        decide(*args)
        return fused.run(*args) if fused is not None and decided[0] else _layers(*args)

    if diag:  # paired rows, no matrix
        w2v, b2v = [w.unsqueeze(-1) for w in w2], [b.unsqueeze(-1) for b in b2]
        rows = [(k, p.features) for k, p in zip(points1.variances, points1.data, strict=True)]
        cols = [(k, p.features) for k, p in zip(points2.variances, points2.data, strict=True)]
        args = ((x1 * x2).sum(-1), rows, cols, w2v, b2v, d, dual, with_ntk)
        fused, pending = _gated(_fused_layers(policy, args) if fusable else None)
        k_pairs, theta_pairs = layers(*args)
        _count_eager(pending, start_time)
        return k_pairs, (k_pairs.clone() if theta_pairs is k_pairs else theta_pairs)

    w2m, b2m = [w[..., None, None] for w in w2], [b[..., None, None] for b in b2]
    cols = [
        (k.unsqueeze(-2), tuple(f.unsqueeze(-3) for f in p.features))
        for k, p in zip(points2.variances, points2.data, strict=True)
    ]
    n, m = x1.shape[-2], x2.shape[-2]
    batch_shape = torch.broadcast_shapes(
        x1.shape[:-2], x2.shape[:-2], *(w.shape for w in w2), *(b.shape for b in b2)
    )
    # nothing to differentiate: write blocks into preallocated outputs, reuse buffers, work in place
    in_place = _plain(x1, x2, w2, b2, points1, points2) and not (
        torch.is_grad_enabled() and _requires_grad((x1, x2, w2, b2, dual, points1, points2))
    )
    outputs: dict[str, Tensor] = {}
    if in_place:
        shape = (*batch_shape, n, m)
        if want_k or not with_ntk:
            outputs["k"] = torch.empty(shape, dtype=x1.dtype, device=x1.device)
        if with_ntk:
            outputs["theta"] = torch.empty(shape, dtype=x1.dtype, device=x1.device)
    # the Gram matrix of the whole output, once: every block reads its rows, so K⁰ (and with it
    # every later layer) is the same number whichever block an entry falls in. Without autograd it
    # is formed in an output, whose rows each block overwrites after reading them.
    home = next(iter(outputs.values()), None)
    if home is not None and x1.dim() == 2 and x2.dim() == 2 and home.dim() == 2:
        gram = torch.matmul(x1, x2.transpose(-1, -2), out=home)
    else:
        gram = x1 @ x2.transpose(-1, -2)

    def block_args(start: int, stop: int) -> tuple[Any, ...]:
        rows = [
            (k[..., start:stop].unsqueeze(-1), tuple(f[..., start:stop, None, :] for f in p.features))
            for k, p in zip(points1.variances, points1.data, strict=True)
        ]
        return gram[..., start:stop, :], rows, cols, w2m, b2m, d, dual, with_ntk

    fused, pending = _gated(_fused_layers(policy, block_args(0, n)) if fusable else None)
    # the compiled kernel is ready (``fused="auto"``: once built in the background)
    compiled = fused is not None and fused.state == "ready" and compilation.is_enabled()
    grad = torch.is_grad_enabled() and not in_place
    cap = dual.block_entries
    # live tensors per entry: the eager recursion's temporaries; a compiled forward has none
    # besides its outputs (under autograd its backward saves intermediates: count them as eager);
    # a dual that works in place uses a few buffers, in blocks small enough to stay in cache
    if compiled and not grad:
        per_entry = 2 if with_ntk else 1
    elif in_place and dual.works_in_place():
        per_entry = 5
        if x1.device.type == "cpu":  # a GPU has no such cache to fit, and pays per kernel launch
            cap = min(cap or INPLACE_BLOCK_ENTRIES, INPLACE_BLOCK_ENTRIES)
    else:
        per_entry = dual.entry_cost + 2
    row_entries = m * math.prod(batch_shape)
    bounds = _block_bounds(
        n, row_entries, x1.element_size() * per_entry, spec.block_bytes or DEFAULT_BLOCK_BYTES, cap
    )

    if in_place:
        decide(*block_args(bounds[0], bounds[1]))
        largest = max(stop - start for start, stop in itertools.pairwise(bounds)) * row_entries
        scratch = Scratch(largest, x1.dtype, x1.device)
        k_scratch = Scratch(largest, x1.dtype, x1.device)  # K of a block when only Θ is returned
        for start, stop in itertools.pairwise(bounds):
            args = block_args(start, stop)
            slices = {name: out[..., start:stop, :] for name, out in outputs.items()}
            if decided and decided[0]:
                assert fused is not None
                results = dict(zip(("k", "theta"), fused.run(*args), strict=True))
                for name, out in slices.items():
                    out.copy_(_present(results[name]))
                continue
            scratch.shape = k_scratch.shape = (*batch_shape, stop - start, m)
            kb = slices["k"] if "k" in slices else k_scratch.buffer(0)
            _layers_into(kb, slices.get("theta"), scratch, *args)
        k: Tensor | None = outputs.get("k")
        theta: Tensor | None = outputs.get("theta")
    else:
        def block(start: int, stop: int) -> tuple[Tensor, Tensor | None]:
            return layers(*block_args(start, stop))

        if len(bounds) == 2:
            k, theta = block(0, n)
        else:
            decide(*block_args(bounds[0], bounds[1]))
            parts = [
                checkpoint(block, start, stop, use_reentrant=False) if grad else block(start, stop)
                for start, stop in itertools.pairwise(bounds)
            ]
            k = torch.cat([p[0] for p in parts], dim=-2)
            theta = torch.cat([_present(p[1]) for p in parts], dim=-2) if with_ntk else None
        if theta is k:  # depth 0: Θ = K, returned as two tensors
            theta = k.clone()
    if symmetric:  # the exact one-point values on the diagonal
        if k is not None:
            k = _set_diagonal(k, points1.final)
        if theta is not None:
            theta = _set_diagonal(theta, _present(points1.final_ntk))
    _count_eager(pending, start_time)
    return k, theta


def _layers_into(
    kb: Tensor,
    thb: Tensor | None,
    scratch: Scratch,
    gram: Tensor,
    rows: list[tuple[Tensor, tuple[Tensor, ...]]],
    cols: list[tuple[Tensor, tuple[Tensor, ...]]],
    w2: list[Tensor],
    b2: list[Tensor],
    d: int,
    dual: DualActivation,
    with_ntk: bool,
) -> None:
    """``_layers`` without autograd, written into the block ``kb`` (K) and ``thb`` (Θ): the same
    operations in the same order (the same numbers), in place, with the dual's ``pair_inplace``
    working in ``scratch`` (its ``pair`` where it does not work in place, or without features).
    ``gram`` may be ``kb`` or ``thb`` itself (it is read first)."""
    write_into(kb, torch.mul, gram, w2[0]).div_(d).add_(b2[0])  # K⁰ = W²·⟨x, x'⟩/d + b²
    if thb is not None:
        thb.copy_(kb)
    scratch_maps = dual.works_in_place()
    for layer, ((k11, f1), (k22, f2)) in enumerate(zip(rows, cols, strict=True), start=1):
        if scratch_maps and f1 and f2:
            t, t_dot = dual.pair_inplace(k11, k22, kb, f1, f2, with_ntk, scratch)
        else:
            t, t_dot = dual.pair(k11, k22, kb, f1, f2, with_ntk)
        step = None
        if thb is not None:  # W²·Ṫ·Θ, before K (which t_dot may alias) is overwritten
            t_dot = _present(t_dot)
            step = t_dot.mul_(w2[layer]) if scratch.owns(t_dot) else t_dot * w2[layer]
            step = step.mul_(thb) if step.shape == thb.shape else step * thb
        write_into(kb, torch.mul, t, w2[layer]).add_(b2[layer])  # K^{l+1} = W²·T + b²
        if thb is not None:
            write_into(thb, torch.add, kb, _present(step))  # Θ^{l+1} = K^{l+1} + W²·Ṫ·Θ^l


def _plain(*values: Any) -> bool:
    """Whether the tensors among ``values`` (nested in lists, tuples and ``_PointLayers``) hold real
    values outside any transform (no tracing, vmap, ``torch.func.grad``, fake or meta tensors)."""
    tensors: list[Tensor] = []

    def collect(value: Any) -> None:
        if isinstance(value, Tensor):
            tensors.append(value)
        elif isinstance(value, list | tuple):
            for v in value:
                collect(v)
        elif isinstance(value, _PointLayers | PointData):
            collect(list(vars(value).values()))

    collect(values)
    return is_concrete(*tensors) and not any(
        torch._C._functorch.is_functorch_wrapped_tensor(t) for t in tensors
    )


def _requires_grad(value: Any) -> bool:
    """Whether any tensor in ``value`` requires gradients: tensors, modules' parameters, lists,
    tuples, dicts, and the attributes of duals and per-point data, recursively."""
    if isinstance(value, Tensor):
        return value.requires_grad
    if isinstance(value, torch.nn.Module):
        return any(p.requires_grad for p in value.parameters())
    if isinstance(value, list | tuple):
        return any(_requires_grad(v) for v in value)
    if isinstance(value, dict):
        return any(_requires_grad(v) for v in value.values())
    if isinstance(value, DualActivation | PointData | _PointLayers):
        return any(_requires_grad(v) for v in vars(value).values())
    return False


def _count_eager(pending: compilation.Compiled | None, start_time: float) -> None:
    """Add this eager call's seconds to its configuration's total (``fused="auto"``)."""
    if pending is not None:
        _eager_seconds[pending] = _eager_seconds.get(pending, 0.0) + time.perf_counter() - start_time


def _present(t: Tensor | None) -> Tensor:
    """``t``, which the caller knows was computed (an NTK asked for)."""
    assert t is not None
    return t


def _set_diagonal(matrix: Tensor, diagonal: Tensor) -> Tensor:
    """``matrix`` with its (..., i, i) entries replaced; in place unless autograd records it."""
    diagonal = diagonal.expand(matrix.shape[:-1])
    if torch.is_grad_enabled() and (matrix.requires_grad or diagonal.requires_grad):
        return torch.diagonal_scatter(matrix, diagonal, dim1=-2, dim2=-1)
    matrix.diagonal(dim1=-2, dim2=-1).copy_(diagonal)
    return matrix


#: the Args and Raises sections of nngp, ntk and nngp_ntk
_ARGS = args_section("x1 x2 activation depth weight_std bias_std diag quadrature_degree fused block_bytes")
_RAISES = raises_section()


@document(args=_ARGS, raises=_RAISES)
def nngp(
    x1: Tensor,
    x2: Tensor | None = None,
    *,
    activation: ActivationLike,
    depth: int,
    weight_std: LayerStd = DEFAULT_WEIGHT_STD,
    bias_std: LayerStd = DEFAULT_BIAS_STD,
    diag: bool = False,
    quadrature_degree: int | None = None,
    fused: Fused = DEFAULT_FUSED,
    block_bytes: int | None = None,
) -> Tensor:
    """NNGP kernel K^depth(x1, x2) of an infinitely wide MLP.

    The network is neural-tangents' ``stax.serial(*[Dense(W_std, b_std), act] * depth,
    Dense(W_std, b_std))``; K⁰ = W_std²·⟨x, x'⟩/d + b_std² and K^{l+1} = W_std²·E[φ(u)φ(v)] + b_std²
    with (u, v) ~ N(0, Λ^l) ("Deep Neural Networks as Gaussian Processes", Lee et al., ICLR 2018).

    Args:
        {args}

    Raises:
        {raises}

    Returns:
        Tensor of shape (..., n, m), or (..., n) with ``diag=True``.
    """
    spec = _Recursion(activation, depth, weight_std, bias_std, quadrature_degree, fused, block_bytes)
    return _present(_evaluate(x1, x2, spec, diag, with_ntk=False)[0])


@document(args=_ARGS, raises=_RAISES)
def ntk(
    x1: Tensor,
    x2: Tensor | None = None,
    *,
    activation: ActivationLike,
    depth: int,
    weight_std: LayerStd = DEFAULT_WEIGHT_STD,
    bias_std: LayerStd = DEFAULT_BIAS_STD,
    diag: bool = False,
    quadrature_degree: int | None = None,
    fused: Fused = DEFAULT_FUSED,
    block_bytes: int | None = None,
) -> Tensor:
    """Neural tangent kernel Θ^depth(x1, x2) of an infinitely wide MLP (NTK parameterization).

    Θ⁰ = K⁰ and Θ^{l+1} = K^{l+1} + W_std²·E[φ'(u)φ'(v)]·Θ^l ("Neural Tangent Kernel: Convergence
    and Generalization in Neural Networks", Jacot, Gabriel & Hongler, NeurIPS 2018), for neural-tangents'
    ``stax.serial(*[Dense(W_std, b_std), act] * depth, Dense(W_std, b_std))``.

    Args:
        {args}

    Raises:
        {raises}

    Returns:
        Tensor of shape (..., n, m), or (..., n) with ``diag=True``.
    """
    spec = _Recursion(activation, depth, weight_std, bias_std, quadrature_degree, fused, block_bytes)
    return _present(_evaluate(x1, x2, spec, diag, with_ntk=True, want_k=False)[1])


@document(args=_ARGS, raises=_RAISES)
def nngp_ntk(
    x1: Tensor,
    x2: Tensor | None = None,
    *,
    activation: ActivationLike,
    depth: int,
    weight_std: LayerStd = DEFAULT_WEIGHT_STD,
    bias_std: LayerStd = DEFAULT_BIAS_STD,
    diag: bool = False,
    quadrature_degree: int | None = None,
    fused: Fused = DEFAULT_FUSED,
    block_bytes: int | None = None,
) -> tuple[Tensor, Tensor]:
    """NNGP and NTK in one pass (same conventions as ``nngp`` and ``ntk``).

    Args:
        {args}

    Raises:
        {raises}

    Returns:
        (nngp, ntk), each of shape (..., n, m), or (..., n) with ``diag=True``.
    """
    spec = _Recursion(activation, depth, weight_std, bias_std, quadrature_degree, fused, block_bytes)
    k, theta = _evaluate(x1, x2, spec, diag, with_ntk=True)
    return _present(k), _present(theta)
