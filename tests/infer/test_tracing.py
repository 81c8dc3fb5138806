"""bayesact.infer.is_concrete: True on eager tensors, False wherever a tensor has no readable values."""

from __future__ import annotations

import pytest
import torch
from torch._subclasses.fake_tensor import FakeTensorMode
from torch.fx.experimental.proxy_tensor import make_fx

from bayesact.infer import is_concrete


def _seen_by(transform) -> list[bool]:
    """What ``is_concrete`` says of its argument inside ``transform(f)(x)``."""
    seen: list[bool] = []

    def f(t: torch.Tensor) -> torch.Tensor:
        seen.append(is_concrete(t))
        return t.sum()

    transform(f)(torch.randn(2, 3))
    return seen


def test_eager_tensors_are_concrete() -> None:
    x = torch.randn(3)
    assert is_concrete(x) and is_concrete(x, x.long()) and is_concrete()
    assert is_concrete(torch.randn(2, requires_grad=True) * 2)


def test_vmapped_tensors_are_not_concrete_at_any_level() -> None:
    assert _seen_by(torch.func.vmap) == [False]
    assert _seen_by(lambda f: torch.func.vmap(torch.func.grad(f))) == [False]  # batched below a grad wrapper
    assert _seen_by(lambda f: torch.func.vmap(torch.func.vmap(f))) == [False]
    # a vmapped tensor makes the whole call non-concrete, an eager one beside it does not rescue it
    seen: list[bool] = []
    torch.func.vmap(lambda t: seen.append(is_concrete(torch.ones(1), t)) or t)(torch.randn(2))
    assert seen == [False]


def test_grad_alone_keeps_values() -> None:
    assert _seen_by(torch.func.grad) == [True]


@pytest.mark.parametrize("mode", ["real", "fake", "symbolic"])
def test_make_fx_tracing_is_not_concrete(mode: str) -> None:
    assert _seen_by(lambda f: make_fx(f, tracing_mode=mode)) == [False]
    seen: list[bool] = []
    make_fx(lambda t: seen.append(is_concrete()) or t + 1)(torch.randn(2))  # the call itself is traced
    assert seen == [False]


def test_fake_and_meta_tensors_are_not_concrete() -> None:
    with FakeTensorMode():
        fake = torch.randn(2)
    assert not is_concrete(fake)
    assert not is_concrete(torch.empty(2, device="meta"))


@pytest.mark.parametrize("backend", ["eager", "aot_eager"])
def test_compiled_code_takes_the_traced_branch_without_a_graph_break(backend: str) -> None:
    """Under dynamo the check is ``False`` (data checks are skipped), and ``fullgraph=True`` proves
    that calling it breaks no graph."""
    torch._dynamo.reset()

    def f(t: torch.Tensor) -> torch.Tensor:
        return t + 1 if is_concrete(t) else t - 1

    x = torch.randn(3)
    assert torch.equal(f(x), x + 1)
    assert torch.equal(torch.compile(f, backend=backend, fullgraph=True)(x), x - 1)


def test_non_tensor_is_a_type_error() -> None:
    with pytest.raises(TypeError, match="'tensors' must be tensors, got float at position 1"):
        is_concrete(torch.ones(1), 1.0)
