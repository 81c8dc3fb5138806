"""BNN input checks (labels outside the likelihood's support, NaN/inf), float64 end to end, and a
prior without a layer count."""

from __future__ import annotations

import math
import warnings

import gpytorch
import pyro
import pyro.distributions as dist
import pytest
import torch

from bayesact import infer
from bayesact.models import BNN
from bayesact.priors import GaussianPrior, GPPrior, HierarchicalPrior, fit_functional_prior

X = torch.randn(6, 2, generator=torch.Generator().manual_seed(0))


def _bernoulli() -> BNN:
    return BNN(2, hidden=(4,), likelihood="bernoulli")


def _categorical() -> BNN:
    return BNN(2, hidden=(4,), out_dim=3, likelihood="categorical")


BAD_LABELS = [
    (_bernoulli, torch.tensor([0.0, 1, 2, 0, 1, 0]), r"'y' must hold bernoulli labels \(0 or 1\), got 2\.0"),
    (_bernoulli, torch.tensor([0.0, 1, 0.5, 0, 1, 0]), r"'y' must hold bernoulli labels .*, got 0\.5"),
    (_bernoulli, torch.tensor([0, 1, -1, 0, 1, 0]), r"bernoulli labels \(0 or 1\), got -1"),
    (_categorical, torch.tensor([0, 1, 2, 3, 0, 1]),
     r"'y' must hold categorical labels \(integers 0 to 2 for out_dim=3\), got 3"),
    (_categorical, torch.tensor([0, 1, -1, 2, 0, 1]), r"categorical labels .*, got -1"),
    (_categorical, torch.tensor([0, 1, 1.5, 2, 0, 1]), r"categorical labels .*, got 1\.5"),
    (_bernoulli, torch.tensor([0.0, 1, float("nan"), 0, 1, 0]), "'y' contains NaN or inf"),
    (_categorical, torch.tensor([0.0, 1, float("inf"), 0, 1, 0]), "'y' contains NaN or inf"),
]  # fmt: skip


@pytest.mark.parametrize(("make", "y", "message"), BAD_LABELS)
def test_labels_outside_the_support_are_rejected(make, y: torch.Tensor, message: str) -> None:
    """Before: bernoulli y = 2 or 0.5 was accepted silently (a log-density outside the model);
    categorical y = 3 with out_dim = 3 failed deep inside torch with an index error."""
    with pytest.raises(ValueError, match=message):
        make()(X, y)


@pytest.mark.parametrize(("make", "y", "message"), [BAD_LABELS[0], BAD_LABELS[3]])
def test_labels_are_checked_under_mcmc(make, y: torch.Tensor, message: str) -> None:
    with pytest.raises(ValueError, match=message):
        infer.mcmc(make(), X, y, num_chains=2, num_warmup=2, num_samples=2, progress=False, seed=0)


def test_valid_labels_keep_the_captured_gradient() -> None:
    """Integer and bool labels are accepted and cast (bernoulli: x's float dtype; categorical: int64);
    the label check runs only on concrete tensors, so mcmc still captures the gradient graph (no
    "could not capture" fallback warning)."""
    y_bool = torch.tensor([0, 1, 1, 0, 1, 0]).bool()
    trace = pyro.poutine.trace(_bernoulli()).get_trace(X, y_bool)
    assert trace.nodes["obs"]["value"].dtype == X.dtype
    trace = pyro.poutine.trace(_categorical()).get_trace(X, torch.tensor([0.0, 1, 2, 2, 0, 1]))
    assert trace.nodes["obs"]["value"].dtype == torch.int64
    with warnings.catch_warnings(record=True) as caught:
        warnings.simplefilter("always")
        post = infer.mcmc(_categorical(), X, torch.tensor([0, 1, 2, 2, 0, 1]), num_chains=2, num_warmup=5,
                          num_samples=3, max_tree_depth=3, progress=False, seed=0)  # fmt: skip
    assert post.samples["layers.0.weight"].shape == (2, 3, 2, 4)
    assert not [w for w in caught if "could not capture" in str(w.message)]


@pytest.mark.parametrize(
    ("x", "y", "message"),
    [
        (torch.tensor([[0.0, float("inf")]] * 6), None, "'x' contains NaN or inf"),
        (X, torch.tensor([0.0, 1, float("-inf"), 0, 1, 0]), "'y' contains NaN or inf"),
        (X.double(), torch.tensor([0.0, 1, float("nan"), 0, 1, 0], dtype=torch.float64), "'y' contains NaN"),
    ],
)
def test_non_finite_data_names_the_argument(x: torch.Tensor, y: torch.Tensor | None, message: str) -> None:
    with pytest.raises(ValueError, match=message):
        BNN(2, hidden=(4,))(x, y)


def test_large_float64_targets_are_not_mistaken_for_inf() -> None:
    """A float64 target of 1e39 is finite (it overflowed to inf in the old float32 check)."""
    y = torch.full((6,), 1e39, dtype=torch.float64)
    trace = pyro.poutine.trace(BNN(2, hidden=(4,), noise_std=1.0)).get_trace(X.double(), y)
    assert trace.nodes["obs"]["value"].dtype == torch.float64


def _manual_log_joint(bnn: BNN, trace: pyro.poutine.Trace, x: torch.Tensor, y: torch.Tensor) -> torch.Tensor:
    """log p(W, b, y | x) of a GaussianPrior(stds 1) BNN with noise 0.3, recomputed in float64."""
    total = torch.zeros((), dtype=torch.float64)
    h = x
    for layer in range(bnn.num_layers):
        w = trace.nodes[f"layers.{layer}.weight"]["value"]
        b = trace.nodes[f"layers.{layer}.bias"]["value"]
        total = total + dist.Normal(0.0, 1.0).log_prob(w).sum() + dist.Normal(0.0, 1.0).log_prob(b).sum()
        h = h @ w / math.sqrt(w.shape[0]) + b
        if layer < bnn.num_layers - 1:
            h = torch.tanh(h)
    return total + dist.Normal(h[:, 0], 0.3).log_prob(y).sum()


@pytest.mark.parametrize("prior", [None, HierarchicalPrior(2, shape=2.0, rate=2.0)])
def test_float64_forward_and_log_prob(prior) -> None:
    """float64 x and y with a prior built in float32: every site, f and the log density are float64
    (before: the float32 weights met the float64 inputs in a matmul and the call failed), and the
    log joint equals a float64 recomputation to 1e-12 (float32 arithmetic would be off by ~1e-5)."""
    bnn = BNN(2, hidden=(5,), noise_std=0.3, prior=prior)
    x, y = X.double() * 1.3, torch.linspace(-1, 1, 6, dtype=torch.float64)
    trace = pyro.poutine.trace(bnn).get_trace(x, y)
    for name, node in trace.nodes.items():
        if node["type"] == "sample" and name != "data":
            assert node["value"].dtype == torch.float64, name
    assert trace.nodes["f"]["value"].dtype == torch.float64
    log_joint = trace.log_prob_sum()
    assert log_joint.dtype == torch.float64
    if prior is None:
        torch.testing.assert_close(log_joint, _manual_log_joint(bnn, trace, x, y), rtol=1e-12, atol=1e-12)
    assert bnn.sample_functions(x, 3).dtype == torch.float64


def test_float64_under_the_samplers() -> None:
    """mcmc, svi and sghmc run a float64 BNN and return float64 draws."""
    x = torch.linspace(-2, 2, 12, dtype=torch.float64).unsqueeze(-1)
    y = torch.sin(x[:, 0])
    bnn = BNN(1, hidden=(6,), noise_std=0.2)
    post = infer.mcmc(bnn, x, y, num_chains=2, num_warmup=5, num_samples=3, max_tree_depth=3, progress=False,
                      seed=0)  # fmt: skip
    assert post.samples["layers.0.weight"].dtype == torch.float64
    post = infer.sghmc(bnn, x, y, num_chains=2, num_burnin=5, num_samples=3, batch_size=6, progress=False,
                       seed=0)  # fmt: skip
    assert post.samples["layers.0.weight"].dtype == torch.float64
    result = infer.svi(bnn, x, y, num_steps=5, progress=False, seed=0)
    assert all(math.isfinite(loss) for loss in result.losses)


def test_prior_without_a_layer_count_takes_the_networks() -> None:
    prior = GaussianPrior(weight_std=2.0, bias_std=torch.tensor([0.5, 0.4, 0.3]))
    assert prior.num_layers is None and "set by the network" in repr(prior)
    with pytest.raises(ValueError, match="has no layer count yet"):
        prior.rsample_layer(0, 2, 2, 1)
    bnn = BNN(2, hidden=(4, 3), prior=prior)
    assert bnn.prior is prior and prior.num_layers == 3
    torch.testing.assert_close(prior.weight_std.detach(), torch.full((3,), 2.0))
    torch.testing.assert_close(prior.bias_std.detach(), torch.tensor([0.5, 0.4, 0.3]))
    assert set(dict(bnn.named_parameters())) == {"prior.raw_weight_std", "prior.raw_bias_std"}
    with pytest.raises(ValueError, match="'prior' covers 3 layers but the network has 2"):
        BNN(2, hidden=(4,), prior=prior)
    with pytest.raises(ValueError, match=r"'bias_std' must be a number or have shape \(2,\), got \(3,\)"):
        BNN(2, hidden=(4,), prior=GaussianPrior(bias_std=torch.ones(3)))
    hierarchical = BNN(2, hidden=(4,), prior=HierarchicalPrior(shape=3.0)).prior
    assert hierarchical.num_layers == 2
    assert hierarchical.positive_hyperparameters()["weight_shape"].shape == (2,)
    # the unbound prior fits like a bound one
    target = GPPrior(gpytorch.kernels.RBFKernel())
    fitted = fit_functional_prior(BNN(1, hidden=(8,), prior=GaussianPrior()), target, torch.randn(6, 1),
                                  method="nngp", num_iters=2, num_functions=8, progress=False)  # fmt: skip
    assert fitted.prior.num_layers == 2

