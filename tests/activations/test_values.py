"""Every activation against its independent float64 reference (tests/activations/reference.py)."""

from __future__ import annotations

import zlib

import numpy as np
import pytest
import torch

from bayesact import activations as A

from .reference import CASES, reference

LARGE = [-1e4, -1e3, -100.0, -30.0, 30.0, 100.0, 1e3, 1e4]


def test_every_registered_activation_has_a_reference() -> None:
    assert sorted(CASES) == A.names()


def _points(name: str) -> np.ndarray:
    rng = np.random.default_rng(zlib.crc32(name.encode()))
    kinks = np.array(CASES[name].kinks)
    near = np.concatenate([kinks, kinks - 1e-3, kinks + 1e-3])
    x = np.concatenate([rng.normal(scale=3.0, size=200), near, LARGE])
    if not CASES[name].elementwise:  # GLUs split the last dimension; PolyNorm normalises over it
        x = np.concatenate([x, rng.normal(size=(-x.size) % 8)]).reshape(-1, 8)
    return x


def _call(name: str, x: torch.Tensor) -> torch.Tensor:
    return getattr(A.functional, name)(x, **CASES[name].params)


@pytest.mark.parametrize("name", sorted(CASES))
def test_float64_matches_reference(name: str) -> None:
    x = _points(name)
    if name == "polynorm":  # x^3 of 1e4 makes the normaliser dwarf every other row entry; drop LARGE
        x = x[np.abs(x).max(-1) < 50]
    got = _call(name, torch.from_numpy(x)).numpy()
    want = reference(name, x)
    np.testing.assert_allclose(got, want, rtol=1e-10, atol=1e-12)


@pytest.mark.parametrize("name", sorted(CASES))
def test_float32_matches_reference_and_stays_finite(name: str) -> None:
    x = _points(name).astype(np.float32)
    got = _call(name, torch.from_numpy(x))
    assert got.dtype == torch.float32
    assert torch.isfinite(got).all(), f"{name} gave NaN/inf at {x[~torch.isfinite(got).numpy()]}"
    want = reference(name, x.astype(np.float64))
    np.testing.assert_allclose(got.numpy(), want, rtol=2e-5, atol=1e-5)


@pytest.mark.parametrize("name", sorted(CASES))
def test_large_inputs_give_finite_gradients(name: str) -> None:
    x = torch.tensor(LARGE, dtype=torch.float32).repeat(2).reshape(-1, 8)
    x.requires_grad_(True)
    module = A.get(name, **CASES[name].params)
    module(x).sum().backward()
    assert torch.isfinite(x.grad).all(), f"{name}: non-finite input gradient at large |x|"
    for key, p in module.named_parameters():
        assert torch.isfinite(p.grad).all(), f"{name}: non-finite gradient of {key} at large |x|"


PER_CHANNEL = {
    "leaky_relu": {"negative_slope": [0.0, 0.1, 0.5]},
    "elu": {"alpha": [0.5, 1.0, 2.0]},
    "softplus": {"beta": [0.5, 1.0, 3.0]},
    "swish": {"beta": [0.0, 1.0, 2.5]},
    "xatlu": {"alpha": [0.0, 0.2, 0.6]},
    "apa": {"kappa": [0.5, 1.0, 2.0], "lam": [0.3, 1.0, 1.5]},
    "smelu": {"beta": [0.2, 1.0, 3.0]},
    "snake": {"a": [0.2, 1.0, 5.0]},
    "elephant": {"a": [0.5, 1.0, 2.0], "d": [2.0, 4.0, 6.0]},
    "gaussian": {"s": [0.5, 1.0, 2.0]},
    "tempered_sigmoid": {"scale": [1.0, 2.0, 3.0], "temperature": [0.5, 2.0, 4.0], "offset": [0, 1, 2]},
    "polyrelu": {"coeffs": [[0.0, 0.1, 0.2], [1.0, 0.5, 0.0], [0.0, 0.3, 0.1], [0.0, 0.0, 0.2]]},
    "fourier": {"coeffs": [[[0.1, 0.2, 0.3]], [[1.0, -0.5, 0.25]]]},
    "rational": {"a": [[c, 0.5 * c, 2 * c] for c in CASES["rational"].params["a"]],
                 "b": [[c, 0.5 * c, 2 * c] for c in CASES["rational"].params["b"]]},
}


@pytest.mark.parametrize("name", sorted(PER_CHANNEL))
@pytest.mark.parametrize("dtype", [torch.float32, torch.float64])
def test_per_channel_parameters_broadcast_over_the_last_dimension(name: str, dtype: torch.dtype) -> None:
    params = PER_CHANNEL[name]
    module = A.get(name, **{k: torch.tensor(v, dtype=torch.float64) for k, v in params.items()})
    x = torch.randn(16, 3, dtype=dtype) * 2
    got = module(x).detach()
    assert got.dtype == dtype and got.shape == x.shape
    for c in range(3):
        channel = {k: np.asarray(v)[..., c].tolist() for k, v in params.items()}
        want = reference(name, x[:, c].double().numpy(), **channel)
        tol = 1e-10 if dtype == torch.float64 else 2e-5
        np.testing.assert_allclose(got[:, c].double().numpy(), want, rtol=tol, atol=tol)


def test_parameters_broadcast_for_channels_first_layout() -> None:
    a = torch.tensor([0.5, 1.0, 2.0]).reshape(3, 1, 1)
    x = torch.randn(2, 3, 4, 5)
    got = A.get("snake", a=a, trainable=False)(x)
    for c, value in enumerate([0.5, 1.0, 2.0]):
        torch.testing.assert_close(got[:, c], A.functional.snake(x[:, c], a=value))


@pytest.mark.parametrize(
    ("name", "params", "shape", "message"),
    [
        ("snake", {"a": torch.full((64,), 0.5)}, (8, 32),
         "snake: parameter 'a' has length 64 along dimension -1 .* input has 32 channels in its last dim"),
        ("snake", {"a": torch.full((64, 1, 1), 0.5)}, (2, 32, 4, 5),
         "parameter 'a' has length 64 along dimension -3 .* input has 32 channels in dimension -3"),
        ("smelu", {"beta": torch.ones(3)}, (5, 4), "smelu: parameter 'beta' has length 3"),
        ("polyrelu", {"coeffs": torch.ones(4, 5)}, (2, 6), "polyrelu: parameter 'coeffs' has length 5"),
        ("swiglu", {"beta": torch.ones(8)}, (2, 8), "swiglu: parameter 'beta' has length 8 .* 4 channels"),
        ("softmax", {"temperature": torch.ones(3, 1)}, (4, 6), "softmax: parameter 'temperature' has len"),
    ],
)
def test_per_channel_parameter_of_the_wrong_length_names_it(name: str, params: dict, shape: tuple,
                                                            message: str) -> None:
    """Before: a raw broadcasting RuntimeError ("The size of tensor a (64) must match ...")."""
    x = torch.randn(*shape)
    with pytest.raises(ValueError, match=message):
        A.get(name, **params)(x)
    with pytest.raises(ValueError, match=message):
        getattr(A.functional, name)(x, **params)


def test_per_channel_lengths_that_broadcast_are_accepted() -> None:
    x = torch.randn(6, 4)
    assert A.get("swiglu", beta=torch.ones(2))(x).shape == (6, 2)  # one beta per gate channel
    assert A.get("snake", a=torch.ones(4))(x).shape == (6, 4)
    assert A.functional.snake(torch.randn(6, 1), a=torch.ones(4)).shape == (6, 4)  # x broadcasts too
    mixture = A.get("mixture", names=("snake", "gelu"))
    mixture.components[0].raw_a = torch.nn.Parameter(torch.zeros(3))
    with pytest.raises(ValueError, match="snake: parameter 'a' has length 3 .* input has 4 channels"):
        mixture(x)
