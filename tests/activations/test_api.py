"""The public API: names, get, info, modules (parameters, buffers, dtype, device, pickling), bad input."""

from __future__ import annotations

import inspect
import pickle

import pytest
import torch

from bayesact import activations as A
from bayesact.activations.registry import spec

from .reference import CASES

REQUIRED = {
    "relu": [], "leaky_relu": ["negative_slope"], "abs": [], "elu": ["alpha"], "selu": [],
    "softplus": ["beta"], "sigmoid": [], "tanh": [], "erf": [], "gelu": [], "gelu_tanh": [],
    "silu": [], "swish": ["beta"], "mish": [], "golu": [], "xatlu": ["alpha"], "xgelu": ["alpha"],
    "xsilu": ["alpha"], "apa": ["kappa", "lam"], "aglu": ["kappa", "lam"], "crrelu": ["eps"],
    "smelu": ["beta"], "tempered_sigmoid": ["scale", "temperature", "offset"], "snake": ["a"],
    "sin": [], "siren": ["omega0"], "relu2": [], "elephant": ["a", "d"],
    "cauchy": ["lambda1", "lambda2", "d"], "gaussian": ["s"], "polyrelu": ["coeffs"],
    "polynorm": ["coeffs"], "rational": ["a", "b"], "fourier": ["coeffs"], "mixture": ["weights"],
    "reglu": [], "swiglu": ["beta"], "geglu": [], "xglu": ["alpha"],
}  # fmt: skip


def test_required_activations_and_parameter_names() -> None:
    assert set(REQUIRED) <= set(A.names())
    for name, params in REQUIRED.items():
        assert list(A.info(name).params) == params, name
    assert A.info("polynorm").options["dim"] == -1
    assert A.info("rational").options == {"m": 5, "n": 4}
    assert A.info("mixture").options["names"] == ("gelu", "tanh")


@pytest.mark.parametrize("name", sorted(CASES))
def test_info_is_complete_and_consistent(name: str) -> None:
    info = A.info(name)
    assert info.name == name
    assert info.formula and info.paper and info.summary
    assert info.smoothness in {"C0", "C1", "C2", "C-inf"}
    assert info.hmc_safe == (info.smoothness != "C0")
    signature = inspect.signature(getattr(A.functional, name))
    keyword = [p for p in signature.parameters.values() if p.kind is p.KEYWORD_ONLY]
    assert [p.name for p in keyword] == list(info.params) + list(info.options)
    assert info.elementwise == CASES[name].elementwise


def test_smoothness_depends_on_parameters() -> None:
    assert A.info("elu").smoothness == "C1" and A.info("elu", alpha=0.5).smoothness == "C0"
    assert A.info("elephant", d=4.0).smoothness == "C-inf"
    assert A.info("elephant", d=3.0).smoothness == "C1"
    assert A.info("elephant", d=0.5).smoothness == "C0"
    assert A.info("polyrelu", coeffs=(0, 1, 0, 0)).smoothness == "C0"
    assert A.info("polyrelu", coeffs=(0, 0, 1, 0)).smoothness == "C1"
    assert A.info("polyrelu", coeffs=(0, 0, 0, 1)).smoothness == "C2"
    assert A.info("mixture", names=("gelu", "relu"), weights=(1.0, 0.0)).smoothness == "C-inf"
    assert A.info("mixture", names=("gelu", "relu"), weights=(0.5, 0.5)).smoothness == "C0"
    assert A.info("abrelu", a=0.5, b=0.5).smoothness == "C-inf"
    module = A.get("elu")
    module.alpha = torch.tensor(2.0)  # sets raw_alpha so that alpha = 2
    assert module.info().smoothness == "C0"


@pytest.mark.parametrize("name", sorted(CASES))
def test_get_builds_trainable_parameters_or_buffers(name: str) -> None:
    trainable = A.get(name, **CASES[name].params)
    frozen = A.get(name, trainable=False, **CASES[name].params)
    numeric = list(A.info(name).params)
    own = {k for k, _ in trainable.named_parameters() if "." not in k}
    # constrained parameters are stored unconstrained as raw_<name> (see test_constraints.py)
    raw = {k for k, c in spec(name).constraints.items() if c.to_raw is not None}
    assert own == {f"raw_{k}" if k in raw else k for k in numeric}
    assert all(p.requires_grad for p in trainable.parameters())
    assert list(frozen.parameters()) == []
    assert {k for k, _ in frozen.named_buffers() if "." not in k} == set(numeric)
    x = torch.randn(6, 8)
    torch.testing.assert_close(trainable(x), frozen(x))
    assert trainable.name == name and set(trainable.tensor_params()) == set(numeric)


@pytest.mark.parametrize("name", sorted(CASES))
@pytest.mark.parametrize("dtype", [torch.float32, torch.float64, torch.bfloat16])
def test_dtype_and_shape_are_preserved(name: str, dtype: torch.dtype) -> None:
    module = A.get(name, **CASES[name].params)
    x = torch.randn(3, 4, 8).to(dtype)
    y = module(x)
    expected_shape = (3, 4, 4) if name in {"glu", "reglu", "geglu", "swiglu", "xglu"} else x.shape
    assert y.dtype == dtype and y.shape == expected_shape and y.device == x.device


@pytest.mark.gpu
@pytest.mark.parametrize("name", sorted(CASES))
def test_cuda_matches_cpu(name: str) -> None:
    module = A.get(name, **CASES[name].params)
    x = torch.randn(64, 8, dtype=torch.float64)
    cpu = module.double()(x)
    gpu = module.cuda()(x.cuda())
    assert gpu.device.type == "cuda"
    torch.testing.assert_close(gpu.cpu(), cpu, rtol=1e-10, atol=1e-12)


def test_module_pickles_and_state_dict_round_trips() -> None:
    module = A.get("snake", a=torch.tensor([0.5, 1.5]))
    module.a = module.a * 2
    clone = pickle.loads(pickle.dumps(module))
    x = torch.randn(5, 2)
    torch.testing.assert_close(clone(x), module(x))
    fresh = A.get("snake", a=torch.ones(2))
    fresh.load_state_dict(module.state_dict())
    torch.testing.assert_close(fresh(x), module(x))


def test_mixture_components_are_trainable_modules() -> None:
    module = A.get("mixture", names=("swish", "snake"), weights=(0.25, 0.75))
    names = {k for k, _ in module.named_parameters()}
    assert names == {"raw_weights", "components.0.beta", "components.1.raw_a"}
    x = torch.randn(10, dtype=torch.float64, requires_grad=True)
    module.double()(x).sum().backward()
    assert module.components[1].raw_a.grad is not None and module.raw_weights.grad is not None


def test_rational_default_is_a_fitted_leaky_relu() -> None:
    x = torch.linspace(-3, 3, 2001, dtype=torch.float64)
    y = A.functional.rational(x)
    leaky = torch.where(x >= 0, x, 0.01 * x)
    assert (y - leaky).pow(2).mean().sqrt() < 0.01  # rms fit error (measured 0.0055)
    assert (y - leaky).abs().max() < 0.05  # worst case, at the kink (measured 0.034)
    module = A.get("rational")
    assert module.a.shape == (6,) and module.b.shape == (4,)
    small = A.get("rational", m=3, n=2)
    assert small.a.shape == (4,) and small.b.shape == (2,)


def test_fit_rational_reproduces_a_smooth_target_to_fit_error() -> None:
    a, b = A.fit_rational(torch.tanh, 5, 4)
    x = torch.linspace(-3, 3, 601, dtype=torch.float64)
    assert (A.functional.rational(x, a=a, b=b) - torch.tanh(x)).abs().max() < 5e-3


# ----------------------------------------------------------------------------- bad input
def test_unknown_name_lists_the_closest_names() -> None:
    with pytest.raises(ValueError, match=r"unknown activation 'reluu'.*relu"):
        A.get("reluu")
    with pytest.raises(ValueError, match="closest: .*swiglu"):
        A.info("swigl")
    with pytest.raises(ValueError, match="see bayesact.activations.names"):
        A.get("zzzzzzzz")
    with pytest.raises(TypeError, match="must be a str"):
        A.get(3)  # type: ignore[arg-type]


@pytest.mark.parametrize(
    ("name", "params", "message"),
    [
        ("smelu", {"beta": 0.0}, "'beta' must be > 0"),
        ("smelu", {"beta": -1.0}, "'beta' must be > 0"),
        ("elephant", {"d": 0.0}, "'d' must be > 0"),
        ("elephant", {"a": -1.0}, "'a' must be > 0"),
        ("tempered_sigmoid", {"temperature": -0.5}, "'temperature' must be > 0"),
        ("softplus", {"beta": 0.0}, "'beta' must be > 0"),
        ("apa", {"lam": 0.0}, "'lam' must be > 0"),
        ("aglu", {"kappa": -1.0}, "'kappa' must be > 0"),
        ("gaussian", {"s": 0.0}, "'s' must be > 0"),
        ("snake", {"a": torch.tensor([1.0, -1.0])}, "'a' must be > 0"),
        ("cauchy", {"d": 0.0}, "'d' must be > 0"),
        ("siren", {"omega0": 0.0}, "'omega0' must be > 0"),
        ("rational", {"m": 0}, "degree 'm' must be >= 1"),
        ("rational", {"n": 0}, "degree 'n' must be >= 1"),
        ("rational", {"a": [1.0, 2.0]}, "expected 'a' with m \\+ 1 = 6"),
        ("mixture", {"names": ("gelu", "tanh"), "weights": (0.7, 0.7)}, "'weights' must be on the simplex"),
        ("mixture", {"names": ("gelu", "reglu")}, "component 'reglu' must be an elementwise"),
        ("mixture", {"names": ("gelu", "tanhh")}, "unknown activation 'tanhh'"),
        ("xglu", {"gate": "tanh"}, "'gate' must be one of"),
        ("polynorm", {"eps": 0.0}, "'eps' must be a number > 0"),
        ("swish", {"beta": float("nan")}, "'beta' must be finite"),
        ("polyrelu", {"coeffs": 1.0}, "'coeffs' needs at least 1 dimension"),
        ("fourier", {"coeffs": [[1.0, 2.0]]}, "'coeffs' must have shape \\(2, K"),
        ("mixture", {"names": ("gelu", "tanh", "relu"), "weights": (0.5, 0.5)}, "'weights' has 2 entries"),
    ],
)
def test_invalid_parameters_raise_value_error_naming_them(name: str, params: dict, message: str) -> None:
    with pytest.raises(ValueError, match=message):
        A.get(name, **params)
    with pytest.raises(ValueError, match=message):
        getattr(A.functional, name)(torch.randn(4, 6), **params)


def test_type_errors_name_the_argument() -> None:
    with pytest.raises(TypeError, match="unexpected parameter.*'alpha'.*valid parameters: beta"):
        A.get("smelu", alpha=1.0)
    with pytest.raises(TypeError, match="degree 'm' must be an int"):
        A.get("rational", m=2.5)
    with pytest.raises(TypeError, match="parameter 'beta' must be a number"):
        A.get("smelu", beta="wide")
    with pytest.raises(TypeError, match="argument 'x' must be a torch.Tensor"):
        A.functional.relu([1.0, 2.0])  # type: ignore[arg-type]
    with pytest.raises(TypeError, match="argument 'x' must be a floating-point tensor"):
        A.get("gelu")(torch.arange(3))
    with pytest.raises(TypeError, match="'trainable' must be a bool"):
        A.get("gelu", trainable="yes")  # type: ignore[arg-type]


def test_glu_needs_an_even_last_dimension() -> None:
    with pytest.raises(ValueError, match="swiglu: argument 'x' must have an even last dimension"):
        A.functional.swiglu(torch.randn(2, 5))
