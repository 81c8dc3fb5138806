"""Weight-prior families: draws, reparameterised gradients, hierarchical marginals, Gibbs conditionals."""

from __future__ import annotations

import math

import numpy as np
import pyro
import pyro.distributions as dist
import pytest
import torch
from scipy import stats

from bayesact.priors import GaussianPrior, HierarchicalPrior


def test_gaussian_prior_stds_and_draws() -> None:
    prior = GaussianPrior(3, weight_std=torch.tensor([0.5, 1.0, 2.0]), bias_std=0.3)
    torch.testing.assert_close(prior.weight_std.detach(), torch.tensor([0.5, 1.0, 2.0]))
    torch.testing.assert_close(prior.bias_std.detach(), torch.full((3,), 0.3))
    w, b = prior.rsample_layer(2, 40, 50, n=100)
    assert w.shape == (100, 40, 50) and b.shape == (100, 50)
    # 200,000 N(0, 2^2) draws: the sample std is within 1% (its relative s.e. is 1/sqrt(2n) = 0.16%)
    assert w.std().item() == pytest.approx(2.0, rel=0.01)
    assert b.std().item() == pytest.approx(0.3, rel=0.03)


def test_gaussian_prior_draws_are_differentiable_in_the_stds() -> None:
    prior = GaussianPrior(2)
    w, b = prior.rsample_layer(0, 10, 10, n=50)
    (w.pow(2).mean() + b.pow(2).mean()).backward()
    assert prior.raw_weight_std.grad[0] > 0 and prior.raw_bias_std.grad[0] > 0
    assert prior.raw_weight_std.grad[1] == 0


def test_gaussian_prior_pyro_sites_have_the_right_log_density() -> None:
    prior = GaussianPrior(1, weight_std=0.7, bias_std=0.2)
    trace = pyro.poutine.trace(lambda: prior.pyro_sample_layer(0, "layer", 3, 4)).get_trace()
    w = trace.nodes["layer.weight"]["value"]
    expected = dist.Normal(0.0, 0.7).log_prob(w).sum()
    torch.testing.assert_close(trace.nodes["layer.weight"]["fn"].log_prob(w), expected)
    assert trace.nodes["layer.bias"]["value"].shape == (4,)


def test_hierarchical_weights_are_student_t_marginally() -> None:
    """σ² ~ InvGamma(a, b) per function draw and w | σ² ~ N(0, σ²) give w ~ t_{2a}(0, sqrt(b/a)).

    One weight per draw (the first), 4000 draws: a KS test at level 0.001. A variance shared across
    draws (the reference code's bug) fails this badly.
    """
    torch.manual_seed(1)
    a, b = 3.0, 2.0
    prior = HierarchicalPrior(1, shape=a, rate=b)
    w, _ = prior.rsample_layer(0, 5, 5, n=4000)
    sample = w[:, 0, 0].detach().double().numpy()
    result = stats.kstest(sample, stats.t(df=2 * a, scale=math.sqrt(b / a)).cdf)
    assert result.pvalue > 1e-3
    normal = stats.kstest(sample, stats.norm(scale=sample.std()).cdf)
    assert normal.statistic > result.statistic  # heavier tails than a Gaussian with the same spread


def test_hierarchical_pyro_sites() -> None:
    prior = HierarchicalPrior(2, shape=2.0, rate=3.0)
    trace = pyro.poutine.trace(lambda: prior.pyro_sample_layer(1, "layers.1", 6, 2)).get_trace()
    assert set(n for n in trace.nodes if n.startswith("layers")) == {
        "layers.1.weight_variance",
        "layers.1.weight",
        "layers.1.bias_variance",
        "layers.1.bias",
    }
    var = trace.nodes["layers.1.weight_variance"]["value"]
    w = trace.nodes["layers.1.weight"]["value"]
    torch.testing.assert_close(
        trace.nodes["layers.1.weight"]["fn"].log_prob(w), dist.Normal(0.0, var.sqrt()).log_prob(w).sum()
    )
    assert isinstance(trace.nodes["layers.1.weight_variance"]["fn"], dist.InverseGamma)


def test_gibbs_variance_matches_the_conjugate_posterior() -> None:
    torch.manual_seed(2)
    a, b = 2.0, 1.5
    prior = HierarchicalPrior(1, shape=a, rate=b)
    weights = torch.randn(4000, 8, 5) * 0.8  # 4000 "chains" of an 8 x 5 layer
    draws = prior.gibbs_variance(0, "weight", weights)
    assert draws.shape == (4000,)
    shape_post = a + 40 / 2
    rate_post = b + weights.pow(2).sum((-2, -1)) / 2
    mean = rate_post / (shape_post - 1)
    sd = mean / math.sqrt(shape_post - 2)
    z = ((draws - mean) / sd).numpy()
    assert abs(z.mean()) < 4 / np.sqrt(len(z))  # standardised draws: mean 0 ...
    assert z.std() == pytest.approx(1.0, abs=0.05)  # ... and unit variance


@pytest.mark.parametrize(
    ("make", "message"),
    [
        (lambda: GaussianPrior(0), "'num_layers' must be a positive int"),
        (lambda: GaussianPrior(2, weight_std=-1.0), "'weight_std' must be finite and > 0"),
        (lambda: GaussianPrior(2, bias_std=torch.ones(3)), "'bias_std' must be a number or have shape"),
        (lambda: HierarchicalPrior(2, shape=0.0), "'shape' must be finite and > 0"),
        (lambda: GaussianPrior(2).rsample_layer(5, 2, 2, 1), "layer 5 out of range"),
    ],
)
def test_bad_input(make, message: str) -> None:
    with pytest.raises(ValueError, match=message):
        make()


@pytest.mark.parametrize(
    "prior", [GaussianPrior(2, weight_std=0.7), HierarchicalPrior(2, shape=2.0, rate=3.0)]
)
def test_pyro_sites_in_the_requested_dtype(prior) -> None:
    """A float32 prior draws float64 sites when the model asks for float64 (the BNN passes x's dtype),
    and its log density is the float64 one."""
    trace = pyro.poutine.trace(
        lambda: prior.pyro_sample_layer(0, "layer", 3, 4, dtype=torch.float64)
    ).get_trace()
    weight = trace.nodes["layer.weight"]
    assert weight["value"].dtype == torch.float64
    assert trace.nodes["layer.bias"]["value"].dtype == torch.float64
    assert weight["fn"].log_prob(weight["value"]).dtype == torch.float64
    if isinstance(prior, HierarchicalPrior):
        draws = prior.gibbs_variance(0, "weight", torch.randn(5, 3, 4, dtype=torch.float64))
        assert draws.dtype == torch.float64


def test_float64_prior_draws_in_float64() -> None:
    prior = GaussianPrior(2).double()
    w, b = prior.rsample_layer(0, 3, 4, n=2)
    assert w.dtype == torch.float64 and b.dtype == torch.float64


def test_positive_hyperparameters_and_repr() -> None:
    hyper = HierarchicalPrior(2, shape=2.0, rate=torch.tensor([3.0, 4.0])).positive_hyperparameters()
    assert set(hyper) == {"weight_shape", "weight_rate", "bias_shape", "bias_rate"}
    torch.testing.assert_close(hyper["bias_rate"].detach(), torch.tensor([3.0, 4.0]))
    assert repr(GaussianPrior(2, weight_std=2.0)) == "GaussianPrior(weight_std=[2, 2], bias_std=[1, 1])"


def test_parameter_order_is_stable() -> None:
    """Optimiser states in fit checkpoints are keyed by parameter position: the order must not change
    (nor depend on whether the layer count came from the constructor or the network)."""
    expected = ["raw_weight_shape", "raw_weight_rate", "raw_bias_shape", "raw_bias_rate"]
    assert [name for name, _ in HierarchicalPrior(2).named_parameters()] == expected
    assert [name for name, _ in HierarchicalPrior().bind(2).named_parameters()] == expected
    assert [name for name, _ in GaussianPrior(2).named_parameters()] == ["raw_weight_std", "raw_bias_std"]
