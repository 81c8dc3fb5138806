"""Issue 16, measure 3: the no-grad recursion (preallocated outputs, reused buffers, in-place duals).

When nothing requires gradients, ``nngp``/``ntk`` write their blocks into preallocated outputs
(the Gram matrix is formed in one of them), and the closed forms of relu and erf work in a few
reused block buffers. These tests prove that this path gives the autograd path's numbers bit for
bit (the same operations in the same order), that it allocates nothing of the output's size but
the outputs, and that gradients still flow whenever something requires them.
"""

from __future__ import annotations

from collections.abc import Callable
from typing import Any

import pytest
import torch
from torch import Tensor
from torch.utils._python_dispatch import TorchDispatchMode
from torch.utils._pytree import tree_leaves

from bayesact import activations as A
from bayesact import kernels as K
from bayesact.kernels import recursion

from ._helpers import inputs

DTYPES = [torch.float32, torch.float64]
KERNELS = {"nngp": K.nngp, "ntk": K.ntk}
W_STD, B_STD = 1.3, 0.2


def _points(n: int, m: int, dtype: torch.dtype, d: int = 5) -> tuple[Tensor, Tensor]:
    g = torch.Generator().manual_seed(16)
    x1, x2 = (torch.randn(size, d, generator=g, dtype=torch.float64) for size in (n, m))
    return x1.to(dtype), x2.to(dtype)


def _both_paths(fn: Callable[..., Tensor], x1: Tensor, x2: Tensor | None, **kw: Any) -> tuple[Tensor, Tensor]:
    """(no-grad path, autograd path): the same call with a float W_std and with a W_std that
    requires gradients."""
    plain = fn(x1, x2, weight_std=W_STD, **kw)
    w = torch.tensor(W_STD, dtype=x1.dtype, requires_grad=True)
    tracked = fn(x1, x2, weight_std=w, **kw)
    assert not plain.requires_grad and tracked.requires_grad
    return plain, tracked.detach()


@pytest.mark.parametrize("dtype", DTYPES)
@pytest.mark.parametrize("act", ["relu", "erf"])
@pytest.mark.parametrize("name", ["nngp", "ntk"])
def test_no_grad_path_equals_the_autograd_path(name: str, act: str, dtype: torch.dtype) -> None:
    """Bit for bit, for a cross kernel over two in-place blocks (700 × 400 > INPLACE_BLOCK_ENTRIES)
    and a symmetric one (exact diagonal), also under torch.no_grad and with the stds per layer."""
    x1, x2 = _points(700, 400, dtype)
    assert x1.shape[0] * x2.shape[0] > recursion.INPLACE_BLOCK_ENTRIES
    kw = {"activation": act, "depth": 3, "bias_std": B_STD, "fused": False}
    for other in (x2, None):
        plain, tracked = _both_paths(KERNELS[name], x1, other, **kw)
        assert torch.equal(plain, tracked)
        with torch.no_grad():
            assert torch.equal(KERNELS[name](x1, other, weight_std=W_STD, **kw), tracked)


@pytest.mark.gpu
@pytest.mark.parametrize("dtype", DTYPES)
@pytest.mark.parametrize("act", ["relu", "erf"])
def test_no_grad_path_equals_the_autograd_path_on_cuda(act: str, dtype: torch.dtype) -> None:
    """On a GPU the no-grad blocks are sized by memory only (no cache cap): still the autograd
    path's bits, and the CPU's values to rounding."""
    x1, x2 = (x.cuda() for x in _points(700, 400, dtype))
    kw = {"activation": act, "depth": 3, "bias_std": B_STD, "fused": False}
    for fn in KERNELS.values():
        for other in (x2, None):
            plain, tracked = _both_paths(fn, x1, other, **kw)
            assert plain.is_cuda and torch.equal(plain, tracked)
            cpu = fn(x1.cpu(), None if other is None else other.cpu(), weight_std=W_STD, **kw)
            tol = 1e-5 if dtype == torch.float32 else 1e-12
            torch.testing.assert_close(plain.cpu(), cpu, rtol=tol, atol=tol * float(cpu.abs().max()))


@pytest.mark.parametrize("dtype", DTYPES)
@pytest.mark.parametrize("act", ["relu", "erf"])
def test_nngp_ntk_no_grad_path_equals_the_autograd_path(act: str, dtype: torch.dtype) -> None:
    x1, x2 = _points(300, 200, dtype)
    kw = {"activation": act, "depth": 2, "bias_std": B_STD, "fused": False}
    plain = K.nngp_ntk(x1, x2, weight_std=W_STD, **kw)
    tracked = K.nngp_ntk(x1, x2, weight_std=torch.tensor(W_STD, dtype=dtype, requires_grad=True), **kw)
    for a, b in zip(plain, tracked, strict=True):
        assert torch.equal(a, b.detach())


@pytest.mark.parametrize("act", ["tanh", "gelu", "relu2", "snake", "leaky_relu"])
def test_no_grad_path_equals_the_autograd_path_for_other_duals(act: str) -> None:
    """Duals without an in-place form (Hermite quadrature, GELU, rectified polynomials, trig) and
    leaky_relu with a tensor slope run the same no-grad loop around their ``pair``."""
    x1, x2 = inputs(n=23, m=17)
    kw = {"activation": act, "depth": 3, "bias_std": B_STD, "fused": False}
    for fn in KERNELS.values():
        for other in (x2, None):
            plain, tracked = _both_paths(fn, x1, other, **kw)
            assert torch.equal(plain, tracked)


def test_no_grad_path_with_batched_per_layer_stds_equals_the_autograd_path() -> None:
    """The layers' batch shapes grow through the recursion (W_std of batch (3,) in the input layer,
    b_std of batch (2, 1) in the readout): the blocks are written with the full batch shape."""
    x1, x2 = inputs(n=6, m=5)
    w0 = torch.tensor([1.0, 1.5, 2.0], dtype=torch.float64)
    b_out = torch.tensor([[0.1], [0.4]], dtype=torch.float64)
    for act in ("relu", "erf", "tanh"):
        kw = {"activation": act, "depth": 2, "bias_std": [0.2, 0.3, b_out], "fused": False}
        k, t = K.nngp_ntk(x1, x2, weight_std=[w0, 1.2, 0.8], **kw)
        w = w0.clone().requires_grad_()
        k_ag, t_ag = K.nngp_ntk(x1, x2, weight_std=[w, 1.2, 0.8], **kw)
        assert k.shape == (2, 3, 6, 5) and t_ag.requires_grad
        assert torch.equal(k, k_ag.detach()) and torch.equal(t, t_ag.detach())
        assert torch.equal(K.ntk(x1, x2, weight_std=[w0, 1.2, 0.8], **kw), t)


class _Allocations(TorchDispatchMode):
    """Records the size of every tensor an op allocates (outputs that alias none of its arguments)."""

    def __init__(self) -> None:
        super().__init__()
        self.sizes: list[int] = []

    def __torch_dispatch__(self, func: Any, types: Any, args: Any = (), kwargs: Any = None) -> Any:
        kwargs = kwargs or {}
        result = func(*args, **kwargs)
        seen = {t.untyped_storage().data_ptr() for t in tree_leaves((args, kwargs)) if isinstance(t, Tensor)}
        for t in tree_leaves(result):
            if isinstance(t, Tensor) and t.untyped_storage().data_ptr() not in seen:
                seen.add(t.untyped_storage().data_ptr())
                self.sizes.append(t.numel())
        return result


@pytest.mark.parametrize("act", ["relu", "erf"])
@pytest.mark.parametrize("name", ["nngp", "ntk", "nngp_ntk"])
def test_a_no_grad_call_allocates_its_outputs_and_a_few_block_buffers(name: str, act: str) -> None:
    """n = 768, three in-place blocks: the only allocations of n² entries are the returned matrices,
    and everything else fits in six block buffers. Before (one block of n² entries, every operation
    a fresh temporary): 35 allocations of n² entries for erf's nngp, 81 for its ntk; at n = 5000 (the
    Gram matrix, torch.cat and the finiteness check) 6 and 11, and ~60 fresh temporaries a block."""
    n = 768
    x = _points(n, 1, torch.float32)[0]
    fn = getattr(K, name)
    with _Allocations() as seen:
        out = fn(x, activation=act, depth=3, fused=False)
    matrices = 2 if name == "nngp_ntk" else 1
    assert len(out if isinstance(out, tuple) else [out]) == matrices
    assert sum(size >= n * n for size in seen.sizes) == matrices
    others = sum(size for size in seen.sizes if size < n * n)
    assert others <= 6 * recursion.INPLACE_BLOCK_ENTRIES, others


def test_finiteness_check_sees_one_nan_or_inf() -> None:
    t = torch.randn(300, 301)
    assert recursion._all_finite(t) and recursion._all_finite(t[:0])
    for bad in (float("nan"), float("inf"), -float("inf")):
        u = t.clone()
        u[123, 45] = bad
        assert not recursion._all_finite(u)


# ------------------------------------------------------------------ gradients still flow


def _activation(act: str) -> Any:
    return A.get("leaky_relu", negative_slope=0.2).double() if act == "relu" else act


@pytest.mark.parametrize("act", ["relu", "erf"])
@pytest.mark.parametrize("name", ["nngp", "ntk"])
def test_gradients_flow_to_inputs_and_hyperparameters(name: str, act: str) -> None:
    """float64 gradcheck (central differences) w.r.t. x1, x2, W_std, b_std and, for the relu
    family, the activation's own parameter; each alone requires grad (the rest do not), and a
    no-grad call before does not change the next call's path."""
    x1, x2 = inputs(n=4, m=3)
    fn = KERNELS[name]
    activation = _activation(act)
    with torch.no_grad():
        fn(x1, x2, activation=activation, depth=2)  # in place; the next calls must not be

    def kernel(a: Tensor, b: Tensor, w: Tensor, s: Tensor) -> Tensor:
        return fn(a, b, activation=activation, depth=2, weight_std=w, bias_std=s, fused=False)

    args = [x1, x2, torch.tensor(W_STD, dtype=torch.float64), torch.tensor(B_STD, dtype=torch.float64)]
    for i in range(len(args)):
        tracked = [a.clone().requires_grad_(j == i) for j, a in enumerate(args)]
        assert torch.autograd.gradcheck(lambda t, i=i, tr=tracked: kernel(*tr[:i], t, *tr[i + 1:]),
                                        (tracked[i],))
    if act == "relu":
        slope = activation.negative_slope
        grad = torch.autograd.grad(kernel(*args).sum(), slope)[0]
        step = 1e-6
        with torch.no_grad():
            slope += step
            up = kernel(*args).sum()
            slope -= 2 * step
            down = kernel(*args).sum()
            slope += step
        torch.testing.assert_close(grad, (up - down) / (2 * step), rtol=1e-6, atol=1e-9)


@pytest.mark.parametrize("act", ["relu", "erf"])
@pytest.mark.parametrize("name", ["nngp", "ntk"])
def test_float32_gradients_flow_and_match_float64(name: str, act: str) -> None:
    """A float32 kernel over two in-place blocks with x1 and W_std requiring grad: gradients
    within 1e-4 relative of float64's (a no-grad call in between leaves them alone)."""
    grads = []
    for dtype in DTYPES:
        x1, x2 = _points(600, 500, dtype)
        x1.requires_grad_()
        w = torch.tensor(W_STD, dtype=dtype, requires_grad=True)
        out = KERNELS[name](x1, x2, activation=act, depth=3, weight_std=w, fused=False)
        KERNELS[name](x1.detach(), x2, activation=act, depth=3, fused=False)
        grads.append(torch.autograd.grad(out.sum(), (x1, w)))
    for g32, g64 in zip(*grads, strict=True):
        assert g32.dtype == torch.float32 and torch.isfinite(g32).all()
        torch.testing.assert_close(g32.double(), g64, rtol=1e-4, atol=1e-4 * float(g64.abs().max()))
