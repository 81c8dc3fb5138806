"""The potential's outputs carry no autograd history (issue 11: `make_demo` ran out of memory).

A model that reads an ``nn.Parameter`` (a BNN's prior stds) put it into the captured graph; on
torch 2.14, whose ``make_fx`` drops ``aten.detach``, and for any torch when the model reads the
parameter without ``detach``, the gradient came back requiring grad, the sampler fed it into
its state, and one autograd graph grew over the whole run. These tests check the mechanism:
no output of ``value_and_grad`` (or of a graph compiled here) requires grad, also after many
leapfrog-like steps, and the user's parameter is left as it was.
"""

from __future__ import annotations

import pyro
import pyro.distributions as dist
import pytest
import torch

from bayesact.infer.compiled import detach_constants
from bayesact.infer.potential import Potential

DT = torch.float64
Y = torch.tensor([0.4, -0.2, 1.1], dtype=DT)


def _scale() -> torch.nn.Parameter:
    return torch.nn.Parameter(torch.tensor(2.0, dtype=DT))


def _model(scale: torch.nn.Parameter, detach: bool):
    def model(y: torch.Tensor) -> None:
        s = scale.detach() if detach else scale  # the BNN priors read `std.detach()`
        mu = pyro.sample("mu", dist.Normal(torch.tensor(0.0, dtype=DT), s))
        pyro.sample("y", dist.Normal(mu, 1.0).expand([3]).to_event(1), obs=y)

    return model


@pytest.mark.parametrize("detach", [True, False], ids=["param.detach()", "param"])
@pytest.mark.parametrize("capture", [True, False], ids=["captured", "vmap"])
def test_potential_outputs_carry_no_autograd_history(capture, detach):
    scale = _scale()
    pot = Potential(_model(scale, detach), (Y,), {}, DT, torch.device("cpu"))
    assert pot.prepare(2, capture=capture) == ("captured" if capture else "vmap")
    z = torch.tensor([[0.3], [-1.2]], dtype=DT)
    for _ in range(50):  # leapfrog-like: the gradient feeds the next position
        u, g = pot.value_and_grad(z)
        assert not u.requires_grad and not g.requires_grad
        assert u.grad_fn is None and g.grad_fn is None
        z = z - 0.01 * g
    # closed form: U(mu) = mu²/(2 s²) + Σ(y - mu)²/2 + const, dU/dmu = mu/s² - Σ(y - mu)
    mu = z[:, 0]
    u, g = pot.value_and_grad(z)
    torch.testing.assert_close(g[:, 0], mu / 4.0 - (Y[None, :] - mu[:, None]).sum(-1))
    torch.testing.assert_close(u[1] - u[0], (mu[1] ** 2 - mu[0] ** 2) / 8
                               + ((Y - mu[1]) ** 2 - (Y - mu[0]) ** 2).sum() / 2)
    assert scale.requires_grad and isinstance(scale, torch.nn.Parameter)  # the model is untouched
    if capture:
        assert not any(t.requires_grad for t in [*pot.graph.parameters(), *pot.graph.buffers()])


def test_detach_constants_keeps_values_and_storage():
    from torch.fx.experimental.proxy_tensor import make_fx

    scale = _scale()
    graph = make_fx(lambda x: x * scale)(torch.ones(2, dtype=DT))
    assert graph(torch.ones(2, dtype=DT)).requires_grad  # the hazard itself
    (name, const), *_ = [*graph.named_parameters(), *graph.named_buffers()]
    ptr = const.data_ptr()
    assert detach_constants(graph) is graph
    out = graph(torch.tensor([1.0, -3.0], dtype=DT))
    assert not out.requires_grad
    torch.testing.assert_close(out, torch.tensor([2.0, -6.0], dtype=DT))
    assert getattr(graph, name).data_ptr() == ptr  # a view, not a copy
    with torch.no_grad():
        scale.fill_(0.5)  # the graph reads the parameter's storage, as before
    torch.testing.assert_close(graph(torch.ones(2, dtype=DT)), torch.full((2,), 0.5, dtype=DT))
    assert scale.requires_grad


@pytest.mark.slow
def test_compiled_function_of_a_parameter_reading_fn_returns_no_autograd_history():
    from bayesact.infer.compiled import CompiledFunction

    scale = _scale()

    def fn(x: torch.Tensor) -> torch.Tensor:
        return x * scale.detach() + 1

    compiled = CompiledFunction(fn, (torch.ones(3, dtype=DT),))
    out = compiled(torch.tensor([1.0, 2.0, 3.0], dtype=DT))
    assert not out.requires_grad
    torch.testing.assert_close(out, torch.tensor([3.0, 5.0, 7.0], dtype=DT))
