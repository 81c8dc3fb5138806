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
