"""The rational float32 tanh used in compiled CPU graphs, against float64 references."""

from __future__ import annotations

import math

import numpy as np
import pytest
import torch
from torch.fx.experimental.proxy_tensor import make_fx

from bayesact.infer.fast_math import TANH_CLAMP, FastMath, rational_tanh


def test_rational_tanh_is_within_six_ulp_of_float64_tanh():
    x = torch.linspace(-12.0, 12.0, 1_000_001, dtype=torch.float32)
    got = rational_tanh(x).double()
    ref = torch.tanh(x.double())
    ulp = torch.from_numpy(np.spacing(ref.abs().float().numpy()).astype(np.float64))
    ulp = ulp.clamp_min(float(np.spacing(np.float32(1e-30))))
    assert float(((got - ref).abs() / ulp).max()) <= 6.0
    assert float((got - ref).abs().max()) <= 4e-7
    assert float(got.abs().max()) <= 1.0  # 1 - y² (tanh's backward) never goes negative


def test_rational_tanh_keeps_oddness_small_inputs_infinities_and_nan():
    x = torch.tensor([1e-30, 1e-8, 3e-4, 0.5, 2.0, TANH_CLAMP, 50.0], dtype=torch.float32)
    torch.testing.assert_close(rational_tanh(-x), -rational_tanh(x), rtol=0, atol=0)
    tiny = rational_tanh(x[:2])
    assert torch.allclose(tiny, x[:2], rtol=1e-6, atol=0)  # tanh(x) = x + O(x³)
    special = rational_tanh(torch.tensor([math.inf, -math.inf, math.nan]))
    assert abs(float(special[0]) - 1.0) <= 2e-7 and abs(float(special[1]) + 1.0) <= 2e-7
    assert math.isnan(float(special[2]))


@pytest.mark.parametrize("dtype", [torch.float32, torch.float64])
def test_only_float32_cpu_tanh_is_rewritten(dtype):
    x = torch.randn(5, dtype=dtype)
    fast_math = FastMath()
    graph = make_fx(torch.tanh, decomposition_table=fast_math.table)(x)
    ops = {node.target for node in graph.graph.nodes if node.op == "call_function"}
    rewritten = dtype == torch.float32
    assert (torch.ops.aten.tanh.default in ops) != rewritten
    assert fast_math.rewrites == int(rewritten)
    assert bool(fast_math.inductor_settings()) == rewritten
    torch.testing.assert_close(graph(x), torch.tanh(x), rtol=4e-7, atol=4e-7)


def test_a_compiled_tanh_network_gradient_matches_the_float64_gradient():
    # tanh's backward uses the forward output (1 - y²): the rewritten graph's gradient must
    # still match an exact float64 gradient to float32 accuracy
    from bayesact.infer.compiled import CompiledFunction

    gen = torch.Generator().manual_seed(0)
    x = torch.randn(64, 3, generator=gen)
    w1, w2 = torch.randn(3, 16, generator=gen), torch.randn(16, generator=gen)

    def loss_and_grad(w: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor]:
        def loss(w: torch.Tensor) -> torch.Tensor:
            return (torch.tanh(x.to(w.dtype) @ w) @ w2.to(w.dtype)).square().sum()

        return torch.func.grad_and_value(loss)(w)[::-1]

    fast = CompiledFunction(loss_and_grad, (w1,))
    value, grad = fast(w1)
    ref_value, ref_grad = loss_and_grad(w1.double())
    torch.testing.assert_close(value.double(), ref_value, rtol=2e-5, atol=0)
    torch.testing.assert_close(grad.double(), ref_grad, rtol=2e-5, atol=2e-5 * float(ref_grad.abs().max()))


def test_compile_check_allows_cancellation_error_but_not_flag_flips():
    # a NUTS leaf's acceptance comes from energies of order 1e4: in float32 it keeps only
    # ~1e-3 absolute precision, so the compiled-vs-eager check must allow that, but not more
    from bayesact.compilation import outputs_close

    energy = torch.tensor([1.2e4, 3.4e4])
    accept = torch.tensor([1.0, 0.5])
    flags = torch.tensor([True, False])
    off = accept + torch.tensor([-1e-3, 0.0])
    assert outputs_close([energy, off, flags], [energy, accept, flags])
    assert not outputs_close([off], [accept])  # nothing large: 1e-3 is an error
    assert not outputs_close([energy, accept + 0.5, flags], [energy, accept, flags])
    assert not outputs_close([energy, accept, ~flags], [energy, accept, flags])


@pytest.mark.slow
def test_compiled_float32_nuts_with_rational_tanh_samples_the_exact_posterior():
    # y_i ~ N(tanh(a), 0.5), a ~ N(0, 1), float32, compile=True: the NUTS leaf runs the rational
    # tanh; posterior mean and sd of a against float64 quadrature, within 4 MCSE
    import pyro
    import pyro.distributions as dist

    from bayesact.infer import mcmc

    y = torch.tensor([0.55, 0.8, 0.3, 0.7, 0.62, 0.9])

    def model(y: torch.Tensor) -> None:
        a = pyro.sample("a", dist.Normal(torch.tensor(0.0), 1.0))
        pyro.sample("y", dist.Normal(torch.tanh(a), 0.5).expand([6]).to_event(1), obs=y)

    post = mcmc(model, y, num_chains=4, num_warmup=300, num_samples=1000, seed=0,
                progress=False, compile=True)
    assert post.info["potential_mode"] == "captured+compiled_leaf"
    grid = torch.linspace(-8, 8, 20001, dtype=torch.float64)
    log_p = -0.5 * grid**2 - 2.0 * ((y.double()[:, None] - torch.tanh(grid)) ** 2).sum(0)
    w = torch.softmax(log_p, 0)
    mean = float((w * grid).sum())
    sd = float((w * (grid - mean) ** 2).sum().sqrt())
    draws = post.samples["a"].double()
    mcse = sd / math.sqrt(1000)  # ESS >= 1000 of 4000 draws for this 1-D target (conservative)
    assert abs(float(draws.mean()) - mean) < 4 * mcse
    assert abs(float(draws.std()) - sd) < 0.1 * sd
