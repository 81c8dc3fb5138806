"""bayesact.infer.graph_passes.simplify: fewer operations per call, the same numbers."""

from __future__ import annotations

import pyro
import pyro.distributions as dist
import pytest
import torch
from torch.fx.experimental.proxy_tensor import make_fx

from bayesact.infer.graph_passes import simplify
from bayesact.infer.potential import Potential

aten = torch.ops.aten


def _regression(x: torch.Tensor, y: torch.Tensor) -> None:
    """A two-layer tanh regression with four latent sites and a HalfNormal noise scale."""
    zero, one = x.new_zeros(()), x.new_ones(())
    w1 = pyro.sample("w1", dist.Normal(zero, one).expand([x.shape[-1], 8]).to_event(2))
    b1 = pyro.sample("b1", dist.Normal(zero, one).expand([8]).to_event(1))
    w2 = pyro.sample("w2", dist.Normal(zero, one).expand([8]).to_event(1))
    sigma = pyro.sample("sigma", dist.HalfNormal(one))
    with pyro.plate("data", x.shape[0]):
        pyro.sample("y", dist.Normal(torch.tanh(x @ w1 + b1) @ w2, sigma), obs=y)


def _targets(graph: torch.fx.GraphModule) -> list[object]:
    return [n.target for n in graph.graph.nodes if n.op == "call_function"]


@pytest.mark.parametrize("dtype", [torch.float32, torch.float64])
@pytest.mark.parametrize("chains", [1, 3])
def test_simplified_capture_matches_the_raw_capture_bit_for_bit(dtype: torch.dtype, chains: int) -> None:
    gen = torch.Generator().manual_seed(0)
    x = torch.randn(20, 3, generator=gen, dtype=dtype)
    y = torch.randn(20, generator=gen, dtype=dtype)
    pot = Potential(_regression, (x, y), {}, dtype, torch.device("cpu"))
    example = torch.randn(chains, pot.dim, generator=gen, dtype=dtype)
    raw = make_fx(pot._vmapped_value_and_grad)(example)
    simple = simplify(make_fx(pot._vmapped_value_and_grad)(example), example)
    # per-call work gone: the zero-padded gradient pieces, the input-independent operations
    assert aten.slice_backward.default not in _targets(simple)
    assert len(_targets(simple)) < 0.7 * len(_targets(raw))
    assert "ops" not in simple.forward.__code__.co_names  # direct C++ entry points, no torch.ops.aten
    for _ in range(3):  # at points other than the example, some far out in the tails
        z = 3 * torch.randn(chains, pot.dim, generator=gen, dtype=dtype)
        for got, want in zip(simple(z), raw(z), strict=True):
            assert got.dtype == dtype and torch.equal(got, want)
            assert not got.requires_grad


def test_the_default_potential_runs_the_simplified_graph() -> None:
    """``Potential.prepare`` (what mcmc uses) captures and simplifies; same values as eager vmap."""
    gen = torch.Generator().manual_seed(1)
    x, y = torch.randn(20, 3, generator=gen), torch.randn(20, generator=gen)
    pot = Potential(_regression, (x, y), {}, torch.float32, torch.device("cpu"))
    assert pot.prepare(2) == "captured"
    assert pot.graph is not None and aten.slice_backward.default not in _targets(pot.graph)
    z = torch.randn(2, pot.dim, generator=gen)
    for got, want in zip(pot.value_and_grad(z), pot._vmapped_value_and_grad(z), strict=True):
        torch.testing.assert_close(got, want, rtol=1e-5, atol=1e-5)


def test_identity_arithmetic_and_views_are_dropped_other_constants_kept() -> None:
    def f(z: torch.Tensor) -> torch.Tensor:
        one = torch.ones(())
        zero = torch.zeros(3)
        scale = torch.full((), 2.0)
        w = (z * one + zero - zero) / one  # all identities
        return (w.view(3) * scale).unsqueeze(-1).sum(-1) + torch.tensor(1.5).log()

    z = torch.tensor([-1.0, 0.5, 3.0])
    graph = simplify(make_fx(f)(z), z)
    targets = _targets(graph)
    assert targets.count(aten.mul.Tensor) == 1  # only the multiplication by 2 is left
    assert aten.sub.Tensor not in targets and aten.div.Tensor not in targets
    assert aten.log.default not in targets  # folded to a constant, evaluated once
    assert aten.add.Tensor in targets  # + log(1.5) is not an identity
    w = torch.tensor([2.0, -7.0, 0.25])
    torch.testing.assert_close(graph(w), f(w), rtol=0, atol=0)


def test_slices_that_do_not_tile_stay_as_they_are() -> None:
    def f(z: torch.Tensor) -> torch.Tensor:
        a = aten.slice_backward(z[:2] * 2, [5], 0, 0, 2, 1)
        b = aten.slice_backward(z[3:] * 3, [5], 0, 3, 5, 1)  # index 2 is left out
        return a + b

    z = torch.arange(5.0)
    graph = simplify(make_fx(f)(z), z)
    assert aten.cat.default not in _targets(graph)
    torch.testing.assert_close(graph(z + 1), f(z + 1), rtol=0, atol=0)


def test_graphs_with_random_or_mutating_operations_are_left_alone() -> None:
    def f(z: torch.Tensor) -> torch.Tensor:
        return z * torch.ones(()) + torch.rand(())  # the random draw must not become a constant

    z = torch.zeros(4)
    graph = make_fx(f)(z)
    before = _targets(graph)
    assert _targets(simplify(graph, z)) == before
