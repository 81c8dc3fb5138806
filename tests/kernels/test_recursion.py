"""The layer recursion: conventions, shapes, edge cases, PSD, gradients, blocking, bad input."""

from __future__ import annotations

import pytest
import torch

from bayesact import activations as A
from bayesact import kernels as K

from ._helpers import erf_maps, inputs, rel_frobenius

ACTS = ["relu", "erf", "gelu", "tanh", "abs", "snake"]


def test_depth_zero_is_the_linear_kernel() -> None:
    x1, x2 = inputs()
    k, t = K.nngp_ntk(x1, x2, activation="tanh", depth=0, weight_std=1.7, bias_std=0.3)
    expected = 1.7**2 * x1 @ x2.T / 3 + 0.3**2
    torch.testing.assert_close(k, expected)
    torch.testing.assert_close(t, expected)


def test_ntk_recursion_by_hand_for_erf() -> None:
    """Θ² = K² + W²·Ṫ(Λ¹)·Θ¹ with Θ¹ = K¹ + W²·Ṫ(Λ⁰)·K⁰ (erf's closed forms written out)."""
    x1, x2 = inputs()
    w, b = 1.3, 0.2
    d = x1.shape[1]

    k0 = w**2 * x1 @ x2.T / d + b**2
    a0 = (w**2 * (x1**2).sum(1) / d + b**2)[:, None]
    c0 = (w**2 * (x2**2).sum(1) / d + b**2)[None, :]
    t0, td0 = erf_maps(a0, c0, k0)
    k1 = w**2 * t0 + b**2
    th1 = k1 + w**2 * td0 * k0
    a1 = w**2 * erf_maps(a0, a0, a0)[0] + b**2
    c1 = w**2 * erf_maps(c0, c0, c0)[0] + b**2
    t1, td1 = erf_maps(a1, c1, k1)
    k2 = w**2 * t1 + b**2
    th2 = k2 + w**2 * td1 * th1
    k, theta = K.nngp_ntk(x1, x2, activation="erf", depth=2, weight_std=w, bias_std=b)
    torch.testing.assert_close(k, k2, rtol=1e-12, atol=1e-14)
    torch.testing.assert_close(theta, th2, rtol=1e-12, atol=1e-14)


@pytest.mark.parametrize("name", ACTS)
def test_nngp_ntk_equals_separate_calls_and_symmetry(name: str) -> None:
    x1, x2 = inputs()
    kw = {"activation": name, "depth": 2, "weight_std": 1.4, "bias_std": 0.2}
    k, t = K.nngp_ntk(x1, x2, **kw)
    torch.testing.assert_close(k, K.nngp(x1, x2, **kw))
    torch.testing.assert_close(t, K.ntk(x1, x2, **kw))
    torch.testing.assert_close(K.nngp(x2, x1, **kw), k.T)
    full = K.nngp(x1, **kw)
    torch.testing.assert_close(full, K.nngp(x1, x1.clone(), **kw))
    torch.testing.assert_close(full, full.T)


@pytest.mark.parametrize("name", ACTS)
def test_diag_equals_diagonal_of_full_matrix(name: str) -> None:
    x1, x2 = inputs(n=4, m=4)
    kw = {"activation": name, "depth": 3, "weight_std": 1.2, "bias_std": 0.3}
    k, t = K.nngp_ntk(x1, **kw)
    kd, td = K.nngp_ntk(x1, diag=True, **kw)
    assert kd.shape == (4,)
    torch.testing.assert_close(kd, k.diagonal())
    torch.testing.assert_close(td, t.diagonal())
    # paired rows: K(x1_i, x2_i)
    kp, tp = K.nngp_ntk(x1, x2, diag=True, **kw)
    kf, tf = K.nngp_ntk(x1, x2, **kw)
    torch.testing.assert_close(kp, kf.diagonal())
    torch.testing.assert_close(tp, tf.diagonal())


def test_batch_dimensions_broadcast() -> None:
    g = torch.Generator().manual_seed(0)
    x1 = torch.randn(2, 1, 5, 3, generator=g, dtype=torch.float64)
    x2 = torch.randn(3, 4, 3, generator=g, dtype=torch.float64)
    w = torch.tensor([1.0, 1.5, 2.0], dtype=torch.float64)  # broadcasts with the batch shape (2, 3)
    k = K.ntk(x1, x2, activation="gelu", depth=2, weight_std=w, bias_std=0.1)
    assert k.shape == (2, 3, 5, 4)
    for i in range(2):
        for j in range(3):
            single = K.ntk(x1[i, 0], x2[j], activation="gelu", depth=2, weight_std=float(w[j]), bias_std=0.1)
            torch.testing.assert_close(k[i, j], single)
    kd = K.nngp(x1, activation="gelu", depth=2, weight_std=w, bias_std=0.1, diag=True)
    assert kd.shape == (2, 3, 5)


@pytest.mark.parametrize("dtype", [torch.float32, torch.float64])
@pytest.mark.parametrize("name", ["relu", "erf", "tanh", "sin"])
def test_blocked_evaluation_is_identical_to_one_block(name: str, dtype: torch.dtype) -> None:
    """Bit for bit: every block reads the one Gram matrix, and the rest is elementwise."""
    x1, x2 = (x.to(dtype) for x in inputs(n=23, m=17))
    kw = {"activation": name, "depth": 3, "weight_std": 1.3, "bias_std": 0.2}
    for other in (x2, None):
        k, t = K.nngp_ntk(x1, other, **kw)
        for block_bytes in (4096, 1500, 1):  # a few rows per block, uneven blocks, one row each
            kb, tb = K.nngp_ntk(x1, other, block_bytes=block_bytes, **kw)
            assert torch.equal(kb, k) and torch.equal(tb, t), block_bytes


def test_blocked_evaluation_is_identical_across_threads() -> None:
    """One block of 43700 entries (ATen splits its elementwise ops between threads, > 32768) against
    blocks of about 14600 (not split): still bit for bit."""
    x1, x2 = inputs(n=230, m=190)
    kw = {"activation": "erf", "depth": 2, "weight_std": 1.3, "bias_std": 0.2}
    k, t = K.nngp_ntk(x1, x2, **kw)
    kb, tb = K.nngp_ntk(x1, x2, block_bytes=190 * 8 * 18 * 100, **kw)  # 76-77 rows a block
    assert torch.equal(kb, k) and torch.equal(tb, t)


def test_blocked_gradients_match() -> None:
    """Gradients w.r.t. shared hyperparameters sum over all entries, block by block when blocked:
    the same terms in another order, so they agree to rounding (1e-13 relative), not bit for bit.
    """
    x1, x2 = inputs(n=12, m=9)
    grads = []
    for block_bytes in (None, 2048):
        w = torch.tensor(1.3, dtype=torch.float64, requires_grad=True)
        b = torch.tensor(0.2, dtype=torch.float64, requires_grad=True)
        act = A.get("leaky_relu", negative_slope=0.2).double()
        t = K.ntk(x1, x2, activation=act, depth=3, weight_std=w, bias_std=b, block_bytes=block_bytes)
        grads.append((t, *torch.autograd.grad(t.square().sum(), (w, b, act.negative_slope))))
    assert torch.equal(grads[0][0], grads[1][0])
    for a, b in zip(*grads, strict=True):
        torch.testing.assert_close(a, b, rtol=1e-13, atol=0)


@pytest.mark.parametrize("dtype", [torch.float32, torch.float64])
@pytest.mark.parametrize("name", ["relu", "abs", "leaky_relu", "relu2", "erf", "gelu", "tanh", "sin"])
def test_correlation_plus_minus_one_and_zero_inputs(name: str, dtype: torch.dtype) -> None:
    """x2 = ±x1 (ρ = ±1 exactly) and zero vectors: finite values and finite gradients."""
    g = torch.Generator().manual_seed(5)
    x = torch.randn(4, 3, generator=g, dtype=dtype)
    x = torch.cat([x, torch.zeros(1, 3, dtype=dtype)])
    for bias in (0.0, 0.5):
        for other in (x, -x):
            w = torch.tensor(1.4, dtype=dtype, requires_grad=True)
            b = torch.tensor(bias, dtype=dtype, requires_grad=True)
            xx = x.clone().requires_grad_(True)
            k, t = K.nngp_ntk(xx, other, activation=name, depth=2, weight_std=w, bias_std=b)
            assert torch.isfinite(k).all() and torch.isfinite(t).all()
            grads = torch.autograd.grad((k + t).sum(), (w, b, xx))
            for grad in grads:
                assert torch.isfinite(grad).all()


def test_x2_equal_x1_matches_diagonal_exactly_and_minus_x1_is_exact_for_relu() -> None:
    x, _ = inputs(n=4)
    k = K.nngp(x, x.clone(), activation="relu", depth=1, weight_std=1.0, bias_std=0.0)
    kd = K.nngp(x, activation="relu", depth=1, bias_std=0.0, diag=True)
    torch.testing.assert_close(k.diagonal(), kd, rtol=1e-14, atol=0)
    # ρ = −1 for ReLU without bias: E[relu(u)relu(−u)] = 0
    km = K.nngp(x, -x, activation="relu", depth=1, weight_std=1.0, bias_std=0.0)
    assert km.diagonal().abs().max() < 1e-12


def test_relu_variance_preserved_at_criticality() -> None:
    """ReLU with W_std² = 2, b_std = 0 keeps K(x, x) = ‖x‖²/d at every depth (He et al.)."""
    x, _ = inputs(n=4)
    for depth in range(6):
        kd = K.nngp(x, activation="relu", depth=depth, weight_std=2**0.5, bias_std=0.0, diag=True)
        torch.testing.assert_close(kd, 2 * (x**2).sum(1) / 3)


@pytest.mark.parametrize("name", ["relu", "erf", "tanh", "gelu", "abs", "sin", "silu", "mish"])
@pytest.mark.parametrize("depth", [1, 2, 3, 4, 5])
def test_kernel_matrices_are_psd(name: str, depth: int) -> None:
    g = torch.Generator().manual_seed(depth)
    x = torch.randn(30, 4, generator=g, dtype=torch.float64)
    for kernel in K.nngp_ntk(x, activation=name, depth=depth, weight_std=1.5, bias_std=0.1):
        eig = torch.linalg.eigvalsh(kernel)
        assert eig.min() >= -1e-8 * kernel.trace()


def test_polynomial_activation_gives_rank_deficient_kernel() -> None:
    """x² after a linear layer spans a space of dimension ≤ d(d+1)/2 + 1 (features x_i x_j, 1)."""
    g = torch.Generator().manual_seed(0)
    x = torch.randn(40, 3, generator=g, dtype=torch.float64)
    square = K.RectifiedPolynomialDual({2: 1.0}, {2: 1.0})
    k = K.nngp(x, activation=square, depth=1, weight_std=1.0, bias_std=0.5)
    eig = torch.linalg.eigvalsh(k)
    assert int((eig > 1e-9 * eig.max()).sum()) <= 3 * 4 // 2 + 1 + 3  # + the linear terms from b
    k_tanh = K.nngp(x, activation="tanh", depth=1, weight_std=1.0, bias_std=0.5)
    assert torch.linalg.eigvalsh(k_tanh).min() > 0


@pytest.mark.parametrize(
    "name",
    [
        "leaky_relu", "xgelu", "snake", "siren", "gaussian", "fourier", "polyrelu", "softplus",
        pytest.param("elephant", marks=pytest.mark.slow),
        pytest.param("tempered_sigmoid", marks=pytest.mark.slow),
        pytest.param("apa", marks=pytest.mark.slow),
    ],
)
def test_gradcheck_hyperparameters_and_activation_parameters(name: str) -> None:
    """Analytic gradients w.r.t. W_std, b_std and φ's parameters agree with finite differences."""
    x1, x2 = inputs(n=2, m=2)
    act = A.get(name).double()
    if name == "siren":
        act.omega0.data.fill_(3.0)
    params = list(act.parameters())
    w = torch.tensor(1.2, dtype=torch.float64, requires_grad=True)
    b = torch.tensor(0.3, dtype=torch.float64, requires_grad=True)

    def fn(w: torch.Tensor, b: torch.Tensor, *p: torch.Tensor) -> tuple:
        return K.nngp_ntk(
            x1, x2, activation=act, depth=2, weight_std=w, bias_std=b, quadrature_degree=12
        )

    assert torch.autograd.gradcheck(fn, (w, b, *params), eps=1e-6, atol=1e-6, rtol=1e-4)


def test_gradients_w_r_t_inputs_gradcheck() -> None:
    x1, x2 = inputs(n=3, m=2)
    x1 = x1.requires_grad_(True)
    for name in ("relu", "tanh"):
        assert torch.autograd.gradcheck(
            lambda x, name=name: K.nngp_ntk(
                x, x2, activation=name, depth=2, bias_std=0.1, quadrature_degree=12
            ),
            (x1,), eps=1e-6, atol=1e-6, rtol=1e-4,
        )


def test_hermite_series_backward_matches_plain_autograd() -> None:
    from bayesact.kernels.hermite import hermite_series

    g = torch.Generator().manual_seed(0)
    rho = (torch.rand(4, 5, generator=g, dtype=torch.float64) * 2 - 1).requires_grad_(True)
    c1 = torch.randn(4, 1, 7, generator=g, dtype=torch.float64, requires_grad=True)
    c2 = torch.randn(1, 5, 7, generator=g, dtype=torch.float64, requires_grad=True)
    assert torch.autograd.gradcheck(hermite_series, (rho, c1, c2))
    plain = sum(c1[..., j] * c2[..., j] * rho**j for j in range(7))
    torch.testing.assert_close(hermite_series(rho, c1, c2), plain)


def test_float32_close_to_float64() -> None:
    x1, x2 = inputs()
    for name in ("relu", "erf", "tanh", "gelu"):
        k64, t64 = K.nngp_ntk(x1, x2, activation=name, depth=3, weight_std=1.4, bias_std=0.1)
        k32, t32 = K.nngp_ntk(x1.float(), x2.float(), activation=name, depth=3, weight_std=1.4, bias_std=0.1)
        assert k32.dtype == torch.float32
        assert rel_frobenius(k32.double(), k64) < 1e-5
        assert rel_frobenius(t32.double(), t64) < 1e-5


def test_plain_callable_and_registry_module_agree() -> None:
    x1, x2 = inputs()
    a = K.nngp(x1, x2, activation=torch.tanh, depth=2)
    b = K.nngp(x1, x2, activation="tanh", depth=2)
    torch.testing.assert_close(a, b)


# ---------------------------------------------------------------------------- bad input
def test_bad_inputs_raise_value_errors_naming_the_argument() -> None:
    x1, x2 = inputs()
    with pytest.raises(ValueError, match="x2"):
        K.nngp(x1, x2[:, :2], activation="relu", depth=1)
    with pytest.raises(ValueError, match="depth"):
        K.nngp(x1, activation="relu", depth=-1)
    with pytest.raises(TypeError, match="depth"):
        K.nngp(x1, activation="relu", depth=1.5)
    for bad in (0.0, -1.0, float("nan")):
        with pytest.raises(ValueError, match="weight_std"):
            K.nngp(x1, activation="relu", depth=1, weight_std=bad)
    with pytest.raises(ValueError, match="bias_std"):
        K.ntk(x1, activation="relu", depth=1, bias_std=-0.1)
    with pytest.raises(ValueError, match="weight_std"):
        K.ntk(x1, activation="relu", depth=1, weight_std=torch.tensor([1.0, -1.0]))
    bad_x = x1.clone()
    bad_x[0, 0] = float("nan")
    with pytest.raises(ValueError, match="x1"):
        K.nngp(bad_x, activation="relu", depth=1)
    bad_x[0, 0] = float("inf")
    with pytest.raises(ValueError, match="x2"):
        K.nngp(x1, bad_x, activation="relu", depth=1)
    with pytest.raises(ValueError, match="x1"):
        K.nngp(torch.randn(5), activation="relu", depth=1)
    with pytest.raises(ValueError, match="x2"):
        K.nngp(x1, x2, activation="relu", depth=1, diag=True)  # 5 vs 3 rows


@pytest.mark.parametrize("name", ["polynorm", "glu", "reglu", "swiglu", "geglu", "xglu"])
def test_non_elementwise_activations_are_rejected(name: str) -> None:
    x1, _ = inputs()
    with pytest.raises(ValueError, match="activation"):
        K.nngp(x1, activation=name, depth=1)
    with pytest.raises(ValueError, match="activation"):
        K.NNGPKernel(name, depth=1)
    with pytest.raises(ValueError, match="activation"):
        K.empirical_nngp(x1, activation=name, depth=1, n_networks=2, width=8)


def test_per_channel_parameters_are_rejected_naming_the_parameter() -> None:
    x1, _ = inputs()
    with pytest.raises(ValueError, match="negative_slope"):
        K.nngp(x1, activation=A.get("leaky_relu", negative_slope=torch.full((4,), 0.1)), depth=1)
    with pytest.raises(ValueError, match="beta"):
        K.nngp(x1, activation=A.get("softplus", beta=torch.ones(3)), depth=1)
    # a coefficient vector is not a per-channel parameter
    K.nngp(x1, activation=A.get("polyrelu", coeffs=(0.1, 1.0, 0.2, 0.0)), depth=1)


def test_other_bad_arguments() -> None:
    x1, _ = inputs()
    with pytest.raises(TypeError, match="activation"):
        K.nngp(x1, activation=3, depth=1)
    with pytest.raises(ValueError, match="unknown activation"):
        K.nngp(x1, activation="relux", depth=1)
    with pytest.raises(ValueError, match="degree"):
        K.nngp(x1, activation="tanh", depth=1, quadrature_degree=0)
    with pytest.raises(ValueError, match="block_bytes"):
        K.nngp(x1, activation="tanh", depth=1, block_bytes=0)
    with pytest.raises(ValueError, match="elementwise"):
        K.nngp(x1, activation=lambda x: x.sum(-1), depth=1)
