"""Defaults agree with torch's counterparts (a changed default fails here), and so do the values."""

from __future__ import annotations

import inspect

import pytest
import torch
import torch.nn.functional as F

from bayesact import activations as A

# (registry name, its parameter, torch callables with the same parameter, the value all must have).
# torch's defaults are read from the signatures (F.softplus is a builtin without one: nn.Softplus),
# and the literal pins the value, so a change on either side fails. Registered activations with a
# torch counterpart but no parameter (relu, selu, gelu, silu, mish, ...) are compared by value below;
# celu and hardtanh are not registered.
DEFAULTS = [
    ("leaky_relu", "negative_slope", (F.leaky_relu, torch.nn.LeakyReLU), 0.01),
    ("elu", "alpha", (F.elu, torch.nn.ELU), 1.0),
    ("softplus", "beta", (torch.nn.Softplus,), 1.0),
    ("swish", "beta", (), 1.0),  # SiLU is swish with beta = 1
]


@pytest.mark.parametrize(("name", "param", "torch_fns", "value"), DEFAULTS)
def test_default_equals_torch_default(name: str, param: str, torch_fns: tuple, value: float) -> None:
    for torch_fn in torch_fns:
        torch_default = inspect.signature(torch_fn).parameters[param].default
        assert torch_default == value, f"torch changed {torch_fn.__name__}'s {param} default"
    assert A.info(name).params[param] == value
    assert inspect.signature(getattr(A.functional, name)).parameters[param].default == value


# The functionals at their defaults, bound in float64, against torch (softplus: torch switches to x
# above its threshold 20, where log1p(exp(-20)) = 2e-9 is the difference; ours has no threshold).
TORCH_EQUIVALENT = {
    "leaky_relu": (F.leaky_relu, 0.0),
    "elu": (F.elu, 0.0),
    "selu": (F.selu, 0.0),
    "softplus": (F.softplus, 3e-9),
    "relu": (F.relu, 0.0),
    "gelu": (F.gelu, 0.0),
    "gelu_tanh": (lambda x: F.gelu(x, approximate="tanh"), 0.0),
    "silu": (F.silu, 0.0),
    "swish": (F.silu, 1e-15),  # swish at its default beta = 1 is SiLU
    "mish": (F.mish, 0.0),
    "sigmoid": (torch.sigmoid, 0.0),
    "tanh": (torch.tanh, 0.0),
    "tempered_sigmoid": (torch.tanh, 1e-15),  # (2, 2, 1) is tanh
    "softmax": (lambda x: F.softmax(x, dim=-1), 1e-15),
}


@pytest.mark.parametrize("name", sorted(TORCH_EQUIVALENT))
def test_defaults_reproduce_torch(name: str) -> None:
    x = torch.linspace(-30, 30, 1200, dtype=torch.float64).reshape(-1, 3)
    torch_fn, atol = TORCH_EQUIVALENT[name]
    torch.testing.assert_close(getattr(A.functional, name)(x), torch_fn(x), rtol=1e-14, atol=atol)


def test_selu_constants_are_torchs() -> None:
    x = torch.tensor([-1e3, -1.0, 1.0], dtype=torch.float64)
    scale = F.selu(x)[2].item()
    alpha = -F.selu(x)[0].item() / scale
    torch.testing.assert_close(A.functional.selu(x), torch.tensor([-scale * alpha, scale * (torch.e ** -1 - 1)
                                                                 * alpha, scale], dtype=torch.float64))


def test_rational_default_is_fitted_to_the_default_leaky_relu() -> None:
    # refitting to leaky ReLU at its default slope gives the default coefficients (LBFGS repeats
    # them to ~1e-9; slope 0.02 would move a_1 = (1 + slope) / 2 by 5e-3)
    slope = A.info("leaky_relu").params["negative_slope"]
    assert slope == 0.01
    rational = A.info("rational")
    a, b = A.fit_rational(lambda x: F.leaky_relu(x, slope), rational.options["m"], rational.options["n"])
    torch.testing.assert_close(a, torch.tensor(rational.params["a"], dtype=a.dtype), rtol=0, atol=1e-6)
    torch.testing.assert_close(b, torch.tensor(rational.params["b"], dtype=b.dtype), rtol=0, atol=1e-6)
