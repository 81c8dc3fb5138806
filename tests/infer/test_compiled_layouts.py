"""The NUTS step's Inductor wrapper compiles once per argument layout and keeps every layout."""

from __future__ import annotations

import torch
from torch.fx.experimental.proxy_tensor import make_fx

from bayesact.infer import compiled


def test_alternating_layouts_compile_once_each(monkeypatch) -> None:
    compiles = []

    def fake_standalone_compile(graph, flat, dynamic_shapes):
        layout = [(t.shape, t.stride()) for t in flat]
        compiles.append(layout)

        def run(*args):  # Inductor's generated code checks sizes and strides the same way
            assert [(t.shape, t.stride()) for t in args] == layout, "expected size/stride"
            return graph(*args)

        return run

    monkeypatch.setattr(torch._inductor, "standalone_compile", fake_standalone_compile)
    graph = make_fx(lambda a, b: [a * b + 1])(torch.ones(3, 4), torch.ones(3, 4))
    a = torch.randn(3, 4)
    b = torch.randn(4, 3).t()  # same shape, other strides
    layouts = compiled._InductorLayouts(graph, (a, a), {})
    for args in [(a, a), (a, b), (a, a), (a, b), (b, a)] * 2:
        (got,) = layouts(*args)
        assert torch.equal(got, args[0] * args[1] + 1)
    assert len(compiles) == 3  # (a, a), (a, b), (b, a): never again


def test_the_kernels_key_follows_constant_values_of_any_layout() -> None:
    # expanded scalars (stride 0, e.g. a prior's scale broadcast to a site) and 0-d constants
    # are hashed by value: the same values give the same key, other values another one
    def graph_with(scale: torch.Tensor) -> torch.fx.GraphModule:
        return make_fx(lambda z: [z * scale + torch.tensor(2.0)])(torch.ones(2, 3))

    z = torch.zeros(2, 3)
    expanded = torch.tensor(1.5).expand(1)  # one element, stride 0
    assert expanded.stride() == (0,)
    key = compiled.nuts_kernels_key(graph_with(expanded), z, 6, 1000.0)
    assert key == compiled.nuts_kernels_key(graph_with(torch.full((1,), 1.5)), z, 6, 1000.0)
    assert key != compiled.nuts_kernels_key(graph_with(torch.tensor(2.5).expand(1)), z, 6, 1000.0)
    assert key != compiled.nuts_kernels_key(graph_with(expanded), z.double(), 6, 1000.0)
