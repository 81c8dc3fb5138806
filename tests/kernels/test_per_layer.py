"""Per-layer weight_std / bias_std: entry l belongs to Dense layer l (0: input layer, depth: readout)."""

from __future__ import annotations

import gpytorch
import pytest
import torch

from bayesact import kernels as K

from ._helpers import erf_maps, inputs, rel_frobenius

W_LAYERS = [1.8, 1.1, 0.6]  # depth 2: input layer, hidden layer, readout
B_LAYERS = [0.1, 0.7, 0.3]


@pytest.mark.parametrize("name", ["relu", "erf", "tanh", "snake"])
@pytest.mark.parametrize("diag", [False, True])
def test_equal_entries_give_the_scalar_result_exactly(name: str, diag: bool) -> None:
    x1, x2 = inputs(n=4, m=4)
    depth = 3
    for other in (None, x2):
        scalar = K.nngp_ntk(x1, other, activation=name, depth=depth, weight_std=1.3, bias_std=0.2,
                            diag=diag)
        for make in (list, tuple):
            w = make([1.3] * (depth + 1))
            b = make(torch.tensor(0.2, dtype=torch.float64) for _ in range(depth + 1))
            layered = K.nngp_ntk(x1, other, activation=name, depth=depth, weight_std=w, bias_std=b,
                                 diag=diag)
            for a, s in zip(layered, scalar, strict=True):
                assert torch.equal(a, s)
        kw = {"activation": name, "depth": depth, "diag": diag}
        assert torch.equal(K.nngp(x1, other, weight_std=[1.3] * 4, bias_std=0.2, **kw), scalar[0])
        assert torch.equal(K.ntk(x1, other, weight_std=1.3, bias_std=[0.2] * 4, **kw), scalar[1])


def test_per_layer_recursion_by_hand_for_erf() -> None:
    """K⁰ uses entry 0, layer l + 1 uses entry l + 1 (erf's closed forms written out, depth 2)."""
    x1, x2 = inputs()
    w, b = W_LAYERS, B_LAYERS
    d = x1.shape[1]

    k0 = w[0] ** 2 * x1 @ x2.T / d + b[0] ** 2
    a0 = (w[0] ** 2 * (x1**2).sum(1) / d + b[0] ** 2)[:, None]
    c0 = (w[0] ** 2 * (x2**2).sum(1) / d + b[0] ** 2)[None, :]
    t0, td0 = erf_maps(a0, c0, k0)
    k1 = w[1] ** 2 * t0 + b[1] ** 2
    th1 = k1 + w[1] ** 2 * td0 * k0
    a1 = w[1] ** 2 * erf_maps(a0, a0, a0)[0] + b[1] ** 2
    c1 = w[1] ** 2 * erf_maps(c0, c0, c0)[0] + b[1] ** 2
    t1, td1 = erf_maps(a1, c1, k1)
    k2 = w[2] ** 2 * t1 + b[2] ** 2
    th2 = k2 + w[2] ** 2 * td1 * th1
    k, theta = K.nngp_ntk(x1, x2, activation="erf", depth=2, weight_std=w, bias_std=b)
    torch.testing.assert_close(k, k2, rtol=1e-12, atol=1e-14)
    torch.testing.assert_close(theta, th2, rtol=1e-12, atol=1e-14)
    kd = K.nngp(x1, activation="erf", depth=2, weight_std=w, bias_std=b, diag=True)
    a2 = w[2] ** 2 * erf_maps(a1, a1, a1)[0] + b[2] ** 2
    torch.testing.assert_close(kd, a2.squeeze(1), rtol=1e-12, atol=1e-14)


def _check_monte_carlo(name: str, width: int, n_networks: int) -> None:
    """Distinct per-layer stds against finite networks; relative Frobenius < 0.05 as in
    test_monte_carlo.py (about ten Monte Carlo standard errors at width 512 × 200 networks). The
    same stds in reverse order give a kernel more than 0.05 away, so the test sees the layer order.
    """
    x1, x2 = inputs(n=4, m=3)
    kw = {"depth": 2, "weight_std": W_LAYERS, "bias_std": B_LAYERS}
    k, theta = K.nngp_ntk(x1, x2, activation=name, **kw)
    k_mc, theta_mc = K.empirical_nngp_ntk(
        x1, x2, activation=name, width=width, n_networks=n_networks, seed=21, **kw
    )
    assert rel_frobenius(k_mc, k) < 0.05, ("nngp", rel_frobenius(k_mc, k))
    assert rel_frobenius(theta_mc, theta) < 0.05, ("ntk", rel_frobenius(theta_mc, theta))
    k_rev, theta_rev = K.nngp_ntk(
        x1, x2, activation=name, depth=2, weight_std=W_LAYERS[::-1], bias_std=B_LAYERS[::-1]
    )
    assert rel_frobenius(k_rev, k_mc) > 0.05 and rel_frobenius(theta_rev, theta_mc) > 0.05


def test_per_layer_stds_against_monte_carlo_erf() -> None:
    _check_monte_carlo("erf", 512, 200)


@pytest.mark.slow
@pytest.mark.parametrize("name", ["relu", "tanh", "gelu"])
def test_per_layer_stds_against_monte_carlo(name: str) -> None:
    _check_monte_carlo(name, 512, 200)


def test_empirical_equal_entries_give_the_scalar_estimate() -> None:
    x1, x2 = inputs(n=3, m=2)
    kw = {"activation": "tanh", "depth": 2, "width": 16, "n_networks": 3, "seed": 4}
    a = K.empirical_nngp_ntk(x1, x2, weight_std=1.2, bias_std=0.3, **kw)
    b = K.empirical_nngp_ntk(x1, x2, weight_std=(1.2, 1.2, 1.2), bias_std=[0.3] * 3, **kw)
    for u, v in zip(a, b, strict=True):
        torch.testing.assert_close(u, v, rtol=1e-14, atol=0)
    with pytest.raises(ValueError, match="weight_std"):
        K.empirical_nngp(x1, weight_std=[1.0, 1.0], **kw)


@pytest.mark.parametrize("name", ["gelu", "tanh"])
def test_gradcheck_reaches_every_entry(name: str) -> None:
    x1, x2 = inputs(n=2, m=2)
    depth = 2
    w = [torch.tensor(v, dtype=torch.float64, requires_grad=True) for v in W_LAYERS]
    b = [torch.tensor(v, dtype=torch.float64, requires_grad=True) for v in B_LAYERS]

    def fn(*stds: torch.Tensor) -> tuple:
        return K.nngp_ntk(
            x1, x2, activation=name, depth=depth, weight_std=list(stds[: depth + 1]),
            bias_std=tuple(stds[depth + 1 :]), quadrature_degree=12,
        )

    assert torch.autograd.gradcheck(fn, (*w, *b), eps=1e-6, atol=1e-6, rtol=1e-4)
    grads = torch.autograd.grad(sum(t.sum() for t in fn(*w, *b)), (*w, *b))
    assert all(float(g.abs()) > 1e-6 for g in grads)  # every layer's std moves the kernel


def test_entries_broadcast_with_the_batch_shape() -> None:
    x1, x2 = inputs(n=4, m=3)
    w0 = torch.tensor([1.0, 1.5, 2.0], dtype=torch.float64)  # batch (3,) in the input layer only
    b2 = torch.tensor([[0.1], [0.4]], dtype=torch.float64)  # batch (2, 1) in the readout only
    k = K.ntk(x1, x2, activation="relu", depth=2, weight_std=[w0, 1.2, 0.8], bias_std=[0.2, 0.3, b2])
    assert k.shape == (2, 3, 4, 3)
    for i in range(2):
        for j in range(3):
            single = K.ntk(
                x1, x2, activation="relu", depth=2, weight_std=[float(w0[j]), 1.2, 0.8],
                bias_std=[0.2, 0.3, float(b2[i, 0])],
            )
            torch.testing.assert_close(k[i, j], single)


def test_bad_per_layer_stds_raise_naming_the_argument() -> None:
    x1, _ = inputs()
    with pytest.raises(ValueError, match="weight_std"):
        K.nngp(x1, activation="relu", depth=2, weight_std=[1.0, 1.0])
    with pytest.raises(ValueError, match="bias_std"):
        K.ntk(x1, activation="relu", depth=1, bias_std=(0.1, 0.1, 0.1))
    with pytest.raises(ValueError, match="bias_std"):
        K.nngp_ntk(x1, activation="relu", depth=0, bias_std=[])
    with pytest.raises(ValueError, match=r"weight_std\[1\]"):
        K.nngp(x1, activation="relu", depth=1, weight_std=[1.0, 0.0])
    with pytest.raises(ValueError, match=r"bias_std\[0\]"):
        K.nngp(x1, activation="relu", depth=1, bias_std=[-0.1, 0.0])
    with pytest.raises(TypeError, match=r"weight_std\[0\]"):
        K.nngp(x1, activation="relu", depth=1, weight_std=["1.0", 1.0])
    with pytest.raises(TypeError, match="weight_std"):
        K.nngp(x1, activation="relu", depth=1, weight_std="1.0")


def test_gpytorch_per_layer_hyperparameters() -> None:
    x1, x2 = inputs()
    for cls, fn in ((K.NNGPKernel, K.nngp), (K.NTKKernel, K.ntk)):
        kernel = cls("erf", depth=2, weight_std=W_LAYERS, bias_std=B_LAYERS, per_layer=True).double()
        assert kernel.raw_weight_std.shape == (1, 3)
        expected = fn(x1, x2, activation="erf", depth=2, weight_std=W_LAYERS, bias_std=B_LAYERS)
        out = kernel(x1, x2).to_dense()
        torch.testing.assert_close(out, expected)
        out.sum().backward()
        assert bool((kernel.raw_weight_std.grad.abs() > 0).all())
        assert bool((kernel.raw_bias_std.grad.abs() > 0).all())
    batched = K.NNGPKernel("relu", depth=1, per_layer=True, batch_shape=torch.Size([2])).double()
    batched.weight_std = torch.tensor([[[1.0, 2.0]], [[1.5, 0.5]]], dtype=torch.float64)
    out = batched(x1).to_dense()
    for i, w in enumerate(([1.0, 2.0], [1.5, 0.5])):
        torch.testing.assert_close(out[i], K.nngp(x1, activation="relu", depth=1, weight_std=w,
                                                  bias_std=0.1))
    with pytest.raises(ValueError, match="weight_std"):
        K.NNGPKernel("relu", depth=2, weight_std=[1.0, 1.0], per_layer=True)
    with pytest.raises(ValueError, match="per_layer"):
        K.NNGPKernel("relu", depth=1, weight_std=[1.0, 1.0])
    prior = gpytorch.priors.GammaPrior(2.0, 2.0)
    kernel = K.NTKKernel("relu", depth=2, per_layer=True, weight_std_prior=prior)
    log_prior = sum(p.log_prob(c(m)).sum() for _, m, p, c, _ in kernel.named_priors())
    assert torch.isfinite(log_prior)
