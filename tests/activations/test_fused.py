"""The fused (compiled) path equals the eager path in values and gradients; falls back with one warning."""

from __future__ import annotations

import warnings

import pytest
import torch
from torch._dynamo.utils import counters

from bayesact import activations as A
from bayesact import compilation
from bayesact.activations import fused
from bayesact.activations.registry import spec

from .reference import CASES

# A representative CI subset: a composite self-gated op, a piecewise op, per-channel parameters,
# a coefficient-vector op, a GLU and a mixture. Every activation runs in the slow test below.
FAST = ["xatlu", "smelu", "snake", "swiglu"]
PER_CHANNEL = {"snake": {"a": torch.tensor([0.3, 0.7, 1.0, 1.5, 2.0, 2.5, 3.0, 4.0])}}


def _run(module: torch.nn.Module, x: torch.Tensor, grad_out: torch.Tensor) -> list[torch.Tensor]:
    x = x.clone().requires_grad_(True)
    for p in module.parameters():
        p.grad = None
    y = module(x)
    y.backward(grad_out)
    return [y.detach(), x.grad, *[p.grad for p in module.parameters()]]


def _contribution_scale(
    name: str, params: dict, x: torch.Tensor, grad_out: torch.Tensor
) -> list[torch.Tensor]:
    """Per parameter entry, sum_i |g_i dy_i/dp| in float64: the natural scale of a gradient reduction.

    Each parameter is expanded to one value per output element, so autograd returns the
    per-element contributions whose sum is the parameter's gradient.
    """
    module = A.get(name, **params).double()
    aligned, expanded = {}, {}
    for key, value in module.tensor_params().items():
        event = spec(name).event_dims.get(key, 0)
        shape = value.shape[:event] + torch.broadcast_shapes(value.shape[event:], grad_out.shape)
        aligned[key] = value.shape[:event] + (1,) * (len(shape) - value.dim()) + value.shape[event:]
        expanded[key] = value.detach().reshape(aligned[key]).expand(shape).clone().requires_grad_(True)
    if not expanded:
        return []
    y = spec(name).fn(x.double(), **expanded, **module.options)
    grads = torch.autograd.grad(y, list(expanded.values()), grad_out.double())
    scales = []
    for (key, value), g in zip(module.tensor_params().items(), grads, strict=True):
        scales.append(g.abs().sum_to_size(aligned[key]).reshape(value.shape))
    return scales


def assert_fused_matches_eager(name: str) -> None:
    """Fused float32 agrees with eager float32 to 1e-6 relative to scale.

    Values and input gradients (elementwise): |fused - eager| <= 1e-6 * max|eager|. Parameter
    gradients are sums over every element, where float32 rounding depends on summation order; their
    scale is S = sum_i |g_i dy_i/dp| and, with truth = the eager path in float64,
    |fused - truth| <= 2 |eager - truth| + 1e-6 * S.
    """
    params = {**CASES[name].params, **PER_CHANNEL.get(name, {})}
    eager = A.get(name, **params)
    compiled = A.get(name, fused=True, **params)
    compiled.load_state_dict(eager.state_dict())
    gen = torch.Generator().manual_seed(3)
    x = torch.randn(512, 8, generator=gen) * 3
    grad_out = torch.randn(eager(x).shape, generator=gen)

    want = _run(eager, x, grad_out)
    frames = counters["frames"]["ok"]
    got = _run(compiled, x, grad_out)
    assert A.fused_available()
    if spec(name).native:  # one native kernel per direction already: the fused path is the eager one
        assert counters["frames"]["ok"] == frames
    else:  # forward and backward each compiled (dynamo silently runs eagerly past its recompile limit)
        assert counters["frames"]["ok"] >= frames + 2, f"{name}: the fused path compiled nothing"
    _assert_agrees(name, params, got, want, x, grad_out)


def _assert_agrees(name: str, params: dict, got: list[torch.Tensor], want: list[torch.Tensor],
                   x: torch.Tensor, grad_out: torch.Tensor) -> None:
    """The tolerance of :func:`assert_fused_matches_eager` (fused ``got``, eager ``want``)."""
    truth = _run(A.get(name, **params).double(), x.double(), grad_out.double())
    for i, label in enumerate(("output", "input gradient")):
        scale = want[i].abs().max().item()
        assert (got[i] - want[i]).abs().max().item() <= 1e-6 * max(scale, 1e-30), f"{name}: {label}"
    scales = _contribution_scale(name, params, x, grad_out)
    for j, (g, w, t, s) in enumerate(zip(got[2:], want[2:], truth[2:], scales, strict=True)):
        bound = 2 * (w.double() - t).abs() + 1e-6 * s
        assert ((g.double() - t).abs() <= bound).all(), f"{name}: parameter gradient {j}"


@pytest.mark.parametrize("name", FAST)
def test_fused_matches_eager(name: str) -> None:
    assert_fused_matches_eager(name)


@pytest.mark.slow
@pytest.mark.parametrize("name", [n for n in sorted(CASES) if n not in FAST])
def test_fused_matches_eager_for_every_activation(name: str) -> None:
    assert_fused_matches_eager(name)


@pytest.fixture
def fresh_policy(monkeypatch: pytest.MonkeyPatch) -> None:
    """No fused kernels built and no fallback warned yet in this process."""
    monkeypatch.setattr(fused, "_cache", {})
    monkeypatch.setattr(compilation, "_warned", set())
    monkeypatch.setattr(compilation, "_fallbacks", {})


@pytest.mark.usefixtures("fresh_policy")
def test_fallback_warns_once_and_runs_eagerly(monkeypatch: pytest.MonkeyPatch) -> None:
    def broken_compile(*args: object, **kwargs: object) -> None:
        raise RuntimeError("no C++ compiler found")

    monkeypatch.setattr(torch, "compile", broken_compile)
    module = A.get("golu", fused=True)
    x = torch.randn(100, requires_grad=True)
    with pytest.warns(A.FusedFallbackWarning, match="no C\\+\\+ compiler found") as record:
        first = module(x)
        module(x)
    assert len(record) == 1
    with warnings.catch_warnings():
        warnings.simplefilter("error")  # a second warning would fail here
        second = A.get("smelu", fused=True)(x)
    torch.testing.assert_close(first, A.functional.golu(x))
    torch.testing.assert_close(second, A.functional.smelu(x))
    first.sum().backward()  # eager autograd
    torch.testing.assert_close(x.grad, torch.func.grad(lambda t: A.functional.golu(t).sum())(x.detach()))
    assert not A.fused_available()


@pytest.mark.usefixtures("fresh_policy")
def test_bad_input_raises_the_eager_error_without_falling_back(monkeypatch: pytest.MonkeyPatch) -> None:
    def refusing_compile(fn, **kwargs: object):
        def compiled(*args: object, **kw: object) -> None:
            raise RuntimeError("compiled function failed")

        return compiled

    monkeypatch.setattr(torch, "compile", refusing_compile)
    with pytest.raises(ValueError, match="even last dimension"):
        A.get("swiglu", fused=True)(torch.randn(2, 5))
    assert A.fused_available()


@pytest.mark.usefixtures("fresh_policy")
def test_compilation_off_runs_the_eager_path(monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setenv(compilation.ENV_VAR, "0")
    frames = counters["frames"]["ok"]
    x = torch.randn(64, 8)
    torch.testing.assert_close(A.get("xatlu", fused=True)(x), A.get("xatlu")(x), rtol=0, atol=0)
    assert counters["frames"]["ok"] == frames
    assert not A.fused_available()


def test_fused_must_be_a_bool_or_auto() -> None:
    with pytest.raises(TypeError, match="'fused' must be True, False or 'auto'"):
        A.get("xatlu", fused="yes")  # type: ignore[arg-type]
    assert "fused='auto'" in repr(A.get("xatlu", fused="auto"))


@pytest.mark.usefixtures("fresh_policy")
def test_auto_runs_small_inputs_eagerly_and_compiles_large_ones_in_the_background() -> None:
    """Small inputs never compile; a large input runs eagerly (no waiting) until a few calls have
    been made, then the compiled kernels take over and agree with eager (tolerance as above)."""
    module = A.get("xatlu", fused="auto")
    eager = A.get("xatlu")
    eager.load_state_dict(module.state_dict())
    frames = counters["frames"]["ok"]
    for _ in range(2 * compilation.AUTO_MIN_CALLS):
        module(torch.randn(8, 8, requires_grad=True)).sum().backward()
    assert counters["frames"]["ok"] == frames and fused._cache == {}
    x = torch.randn(fused.AUTO_MIN_ELEMENTS // 8, 8) * 3
    grad_out = torch.randn_like(x)
    want = _run(eager, x, grad_out)
    for _ in range(compilation.AUTO_MIN_CALLS):
        got = _run(module, x, grad_out)
    (kernels,) = fused._cache.values()
    assert kernels.forward.wait(300) == "ready"
    _run(module, x, grad_out)  # the first fused call: its backward reaches min_calls now
    for _ in range(compilation.AUTO_MIN_CALLS):
        got = _run(module, x, grad_out)
    assert kernels.backward.wait(300) == "ready"
    frames = counters["frames"]["ok"]
    got = _run(module, x, grad_out)
    assert counters["frames"]["ok"] == frames  # compiled already: this call ran the kernels
    _assert_agrees("xatlu", {}, got, want, x, grad_out)
    assert A.fused_available()


@pytest.mark.slow
@pytest.mark.parametrize(
    ("name", "params"),
    [("softmax", {"temperature": 0.7}), ("sparsemax", {"temperature": 0.7}), ("stablemax", {}),
     ("topk_softmax", {"k": 2}), ("sdm", {"q": 3.0, "d": 0.5})],
)
def test_probability_maps_fused_match_eager(name: str, params: dict) -> None:
    """Compiled forward and vjp (sparsemax's autograd.Function supports torch.func); measured <= 6e-8."""
    x = torch.randn(16, 8)
    grad_out = torch.randn(16, 8)
    with warnings.catch_warnings():
        warnings.simplefilter("error", A.FusedFallbackWarning)
        fused_out = _run(A.get(name, fused=True, **params), x, grad_out)
    eager_out = _run(A.get(name, **params), x, grad_out)
    for got, want in zip(fused_out, eager_out, strict=True):
        torch.testing.assert_close(got, want, rtol=1e-5, atol=1e-6)
