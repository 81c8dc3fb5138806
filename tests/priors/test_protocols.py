"""The function-prior protocols: who satisfies them, and fit_functional_prior typed by them (TypeErrors
naming the argument; any network with .prior, .in_dim and sample_functions can be fitted)."""

from __future__ import annotations

import inspect

import gpytorch
import pyro
import pytest
import torch

from bayesact.models import BNN
from bayesact.priors import (
    FunctionPrior,
    FunctionPriorWithCovariance,
    GaussianPrior,
    GPPrior,
    HasActivation,
    HasWeightPrior,
    fit_functional_prior,
)
from bayesact.priors.fitting.nngp_matching import target_covariance

X = torch.linspace(-2, 2, 6, dtype=torch.float64).unsqueeze(-1)
FAST = {"num_functions": 4, "num_iters": 1, "critic_steps": 1, "progress": False, "seed": 0}


def _rbf() -> GPPrior:
    return GPPrior(gpytorch.kernels.ScaleKernel(gpytorch.kernels.RBFKernel()))


class _Draws:
    """A function prior known only through its draws (standard normal values, out = 2)."""

    def sample_functions(self, x: torch.Tensor, n: int) -> torch.Tensor:
        return torch.randn(n, x.shape[0], 2, dtype=x.dtype)


class _KnownCovariance:
    """A function prior with covariance 2 I whose draws must not be used when the covariance is known."""

    def sample_functions(self, x: torch.Tensor, n: int) -> torch.Tensor:
        raise AssertionError("draws used although the covariance is known")

    def covariance(self, x: torch.Tensor) -> torch.Tensor:
        return 2 * torch.eye(x.shape[0], dtype=x.dtype)


class _Wrapped:
    """A network satisfying the fitting protocols without being a BNN (no ``widths``)."""

    def __init__(self) -> None:
        self._net = BNN(1, hidden=(8,)).double()
        self.prior = self._net.prior
        self.in_dim = 1
        self.activation = self._net.activation

    def sample_functions(self, x: torch.Tensor, n: int) -> torch.Tensor:
        return self._net.sample_functions(x, n)


def test_who_satisfies_which_protocol() -> None:
    bnn, gp = BNN(1, hidden=(4,)), _rbf()
    assert all(isinstance(p, FunctionPrior) for p in (bnn, gp, _Draws(), _KnownCovariance()))
    assert all(isinstance(p, FunctionPriorWithCovariance) for p in (gp, _KnownCovariance()))
    assert not any(isinstance(p, FunctionPriorWithCovariance) for p in (bnn, _Draws()))
    assert isinstance(bnn, HasWeightPrior) and isinstance(bnn, HasActivation) and bnn.in_dim == 1
    assert not isinstance(gp, HasWeightPrior) and not isinstance(object(), FunctionPrior)


def test_protocol_members_of_the_bnn_are_found_statically() -> None:
    """From Python 3.12 on, isinstance with a runtime protocol looks members up with
    inspect.getattr_static, which does not see nn.Module submodules (kept in ``_modules``): before the
    BNN exposed ``prior`` and ``activation`` as properties, it satisfied neither HasWeightPrior nor
    HasActivation there. The properties read through PyroModule, so the prior's parameters still
    appear as Pyro param sites."""
    bnn = BNN(1, hidden=(4,))
    for name in ("sample_functions", "prior", "in_dim", "activation", "gibbs_sites", "gibbs_update"):
        inspect.getattr_static(bnn, name)
    trace = pyro.poutine.trace(bnn).get_trace(X.float())
    assert trace.nodes["prior$$$raw_weight_std"]["type"] == "param"


def test_draws_of_every_function_prior_have_shape_n_by_points_by_out() -> None:
    for prior, out in ((BNN(1, hidden=(4,), out_dim=3).double(), 3), (_rbf(), 1), (_Draws(), 2)):
        assert prior.sample_functions(X, 5).shape == (5, 6, out)


@pytest.mark.parametrize(
    ("bnn", "target", "message"),
    [
        (object(), _rbf(), "'bnn' must be a FunctionPrior .*got object"),
        (_Draws(), _rbf(), "'bnn' must satisfy HasWeightPrior .*got _Draws"),
        (BNN(1, hidden=(4,)).double(), object(), "'target' must have a sample_functions\\(x, n\\) method"),
        (BNN(1, hidden=(4,)).double(), "gp", "'target' must .*FunctionPrior.*got str"),
    ],
)
def test_arguments_not_satisfying_their_protocol_raise_type_errors(bnn, target, message: str) -> None:
    """Before: ValueErrors from getattr guesses (and 'bnn' without .prior was not named by protocol).
    The error is a TypeError and, as before, a ValueError."""
    with pytest.raises(TypeError, match=message) as info:
        fit_functional_prior(bnn, target, X, **FAST)
    assert isinstance(info.value, ValueError)


def test_a_prior_that_is_not_a_weight_prior_is_named() -> None:
    wrapped = _Wrapped()
    wrapped.prior = "N(0, 1)"
    with pytest.raises(TypeError, match="'bnn.prior' must be a WeightPrior, got str"):
        fit_functional_prior(wrapped, _rbf(), X, **FAST)


def test_nngp_needs_an_activation() -> None:
    wrapped = _Wrapped()
    del wrapped.activation
    with pytest.raises(TypeError, match="'bnn' must have an .activation for method='nngp'"):
        fit_functional_prior(wrapped, _rbf(), X, method="nngp", **FAST)


@pytest.mark.parametrize("method", ["wasserstein", "nngp"])
def test_any_network_satisfying_the_protocols_is_fitted(method: str) -> None:
    """Before: fitting read ``bnn.widths[0]`` (an AttributeError for a non-BNN network)."""
    wrapped = _Wrapped()
    before = [p.detach().clone() for p in wrapped.prior.parameters()]
    fitted = fit_functional_prior(wrapped, _rbf(), X, method=method, **FAST)
    assert fitted.prior is wrapped.prior and fitted.num_iters == 1
    assert any(not torch.equal(p, b) for p, b in zip(wrapped.prior.parameters(), before, strict=True))


def test_a_known_covariance_is_used_exactly_and_draws_otherwise() -> None:
    assert torch.equal(target_covariance(_KnownCovariance(), X, 4), 2 * torch.eye(6, dtype=torch.float64))
    torch.manual_seed(0)
    estimate = target_covariance(_Draws(), X, 4000)  # (1/(n out)) Σ f fᵀ of N(0, I) draws: I ± 3/sqrt(8000)
    assert torch.allclose(estimate, torch.eye(6, dtype=torch.float64), atol=0.05)
    fitted = fit_functional_prior(BNN(1, hidden=(8,)).double(), _KnownCovariance(), X, method="nngp", **FAST)
    assert fitted.num_iters == 1


def test_the_gp_prior_is_fitted_through_its_covariance() -> None:
    bnn = BNN(1, hidden=(8,), prior=GaussianPrior()).double()
    assert fit_functional_prior(bnn, _rbf(), X, method="nngp", **FAST).num_iters == 1
