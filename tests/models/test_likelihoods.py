"""The observation models of bayesact.models.likelihoods: closed-form log-densities in float64, their
latent sites, the BNN unchanged by the move (same trace log-probs), and the marginalised mixture."""

from __future__ import annotations

import math

import pyro
import pyro.distributions as dist
import pytest
import torch
import torch.distributions as td

from bayesact.models import BNN, Bernoulli, Categorical, Gaussian, MixtureLikelihood, StudentT
from bayesact.priors import HierarchicalPrior

DT = torch.float64


def _gaussian(f: torch.Tensor, y: torch.Tensor, sigma: float) -> torch.Tensor:
    """Σ_out -½ log(2πσ²) - (y - f)²/(2σ²)."""
    return (-0.5 * math.log(2 * math.pi * sigma**2) - (y - f) ** 2 / (2 * sigma**2)).sum(-1)


def _student_t(f: torch.Tensor, y: torch.Tensor, df: float, sigma: float) -> torch.Tensor:
    """Σ_out log Γ((ν+1)/2) - log Γ(ν/2) - ½ log(νπσ²) - (ν+1)/2 log(1 + ((y - f)/σ)²/ν)."""
    const = math.lgamma((df + 1) / 2) - math.lgamma(df / 2) - 0.5 * math.log(df * math.pi * sigma**2)
    return (const - (df + 1) / 2 * torch.log1p(((y - f) / sigma) ** 2 / df)).sum(-1)


def _bernoulli(f: torch.Tensor, y: torch.Tensor) -> torch.Tensor:
    """y log σ(f) + (1 - y) log σ(-f) on the single output."""
    logit = f[..., 0]
    return y * torch.nn.functional.logsigmoid(logit) + (1 - y) * torch.nn.functional.logsigmoid(-logit)


def _categorical(f: torch.Tensor, y: torch.Tensor) -> torch.Tensor:
    """f_y - log Σ_c exp f_c."""
    return f.gather(-1, y.unsqueeze(-1))[..., 0] - torch.logsumexp(f, -1)


def _sites(trace) -> list[str]:
    """Names of the sample sites other than ``obs`` and plates, in order."""
    return [
        name
        for name, node in trace.nodes.items()
        if node["type"] == "sample" and name != "obs" and type(node["fn"]).__name__ != "_Subsample"
    ]


def _data(out: int = 2) -> tuple[torch.Tensor, torch.Tensor]:
    g = torch.Generator().manual_seed(0)
    return torch.randn(6, out, generator=g, dtype=DT), torch.randn(6, out, generator=g, dtype=DT)


def test_gaussian_and_student_t_match_their_closed_forms() -> None:
    f, y = _data()
    assert torch.allclose(Gaussian(0.7).log_prob(f, y), _gaussian(f, y, 0.7), rtol=0, atol=1e-12)
    assert torch.allclose(Gaussian(0.7).log_prob(f, y), td.Normal(f, 0.7).log_prob(y).sum(-1), atol=1e-12)
    for df in (1.0, 4.0, 30.0):
        closed = _student_t(f, y, df, 0.7)
        assert torch.allclose(StudentT(df, 0.7).log_prob(f, y), closed, rtol=0, atol=1e-12)
        assert torch.allclose(closed, td.StudentT(df, f, 0.7).log_prob(y).sum(-1), atol=1e-12)


def test_label_likelihoods_match_their_closed_forms() -> None:
    f, _ = _data(out=1)
    y = torch.tensor([0.0, 1, 1, 0, 1, 0], dtype=DT)
    assert torch.allclose(Bernoulli().log_prob(f, y), _bernoulli(f, y), rtol=0, atol=1e-12)
    assert torch.allclose(_bernoulli(f, y), td.Bernoulli(logits=f[:, 0]).log_prob(y), atol=1e-12)
    f, _ = _data(out=3)
    labels = torch.tensor([0, 2, 1, 2, 0, 1])
    assert torch.allclose(Categorical().log_prob(f, labels), _categorical(f, labels), rtol=0, atol=1e-12)
    assert torch.allclose(_categorical(f, labels), td.Categorical(logits=f).log_prob(labels), atol=1e-12)


def test_latent_noise_and_df_are_sites_with_their_priors() -> None:
    """noise_std ~ HalfNormal(1) and df ~ Gamma(2, 0.1) outside the data plate; obs given them is the
    closed form."""
    f, y = _data()
    conditioned = pyro.condition(
        lambda: StudentT(None).sample("obs", f, y), data={"noise_std": torch.tensor(0.6, dtype=DT),
                                                          "df": torch.tensor(3.0, dtype=DT)},
    )  # fmt: skip
    trace = pyro.poutine.trace(conditioned).get_trace()
    trace.compute_log_prob()
    assert _sites(trace) == ["noise_std", "df"]
    nodes = trace.nodes
    assert torch.allclose(
        nodes["noise_std"]["log_prob"], td.HalfNormal(1.0).log_prob(torch.tensor(0.6, dtype=DT))
    )
    assert torch.allclose(
        nodes["df"]["log_prob"],
        td.Gamma(torch.tensor(2.0, dtype=DT), 0.1).log_prob(torch.tensor(3.0, dtype=DT)),
    )
    assert torch.allclose(nodes["obs"]["log_prob"], _student_t(f, y, 3.0, 0.6), atol=1e-12)
    trace = pyro.poutine.trace(lambda: Gaussian().sample("obs", f, y)).get_trace()
    assert _sites(trace) == ["noise_std"] and "df" not in trace.nodes


# BNN(2, hidden=(5,), likelihood, noise_std, prior).double() traced at X_REF, Y_REF[likelihood],
# total_size=10 after pyro.set_rng_seed(7): trace.log_prob_sum() printed by the code BEFORE the
# likelihoods moved out of bnn.py (commit bba2b0f) and unchanged after it.
RECORDED = {
    ("gaussian", None, False): -89.85945889615533, ("gaussian", None, True): -78.10432201656889,
    ("gaussian", 0.3, False): -450.2098170200985, ("gaussian", 0.3, True): -365.33672465295643,
    ("student_t", None, False): -72.28809152365842, ("student_t", None, True): -73.72883306312498,
    ("student_t", 0.3, False): -104.90047723107756, ("student_t", 0.3, True): -104.89587634618235,
    ("bernoulli", None, False): -51.39639904034816, ("bernoulli", None, True): -59.68798960101751,
    ("categorical", None, False): -66.5936303481034, ("categorical", None, True): -85.08911835822954,
}  # fmt: skip
X_REF = torch.linspace(-1, 1, 8, dtype=DT).reshape(4, 2)
Y_REF = {
    "gaussian": torch.tensor([0.3, -0.2, 1.1, 0.0], dtype=DT),
    "student_t": torch.tensor([0.3, -0.2, 4.1, 0.0], dtype=DT),
    "bernoulli": torch.tensor([0.0, 1, 1, 0], dtype=DT),
    "categorical": torch.tensor([0, 2, 1, 2]),
}


def _independent_log_prob(trace, likelihood: str, noise: float | None, prior) -> torch.Tensor:
    """The model's log density from the trace's latent values, by torch.distributions and hand-written
    forward pass: priors N(0, σ²) (σ = 1 up to float32 rounding of the softplus parameterisation) or
    InvGamma(α, β) variances (α = β = 1, same rounding) with N(0, v), HalfNormal(1) noise, tanh MLP
    with weights / sqrt(fan_in), the observation term scaled by total_size / N = 10 / 4."""
    value = {name: node["value"] for name, node in trace.nodes.items() if node["type"] == "sample"}
    total = torch.zeros((), dtype=DT)
    h = X_REF
    for layer in range(2):
        for kind in ("weight", "bias"):
            w = value[f"layers.{layer}.{kind}"]
            if isinstance(prior, HierarchicalPrior):
                v = value[f"layers.{layer}.{kind}_variance"]
                alpha, beta = (t.detach() for t in prior.hyperparameters(layer, kind))
                total = (
                    total
                    + td.InverseGamma(alpha, beta).log_prob(v)
                    + td.Normal(0.0, v.sqrt()).log_prob(w).sum()
                )
            else:
                std = getattr(prior, f"{kind}_std")[layer].detach()
                total = total + td.Normal(0.0, std).log_prob(w).sum()
        weight, bias = value[f"layers.{layer}.weight"], value[f"layers.{layer}.bias"]
        h = h @ weight / math.sqrt(weight.shape[0]) + bias
        h = torch.tanh(h) if layer == 0 else h
    sigma = noise
    if likelihood in ("gaussian", "student_t") and noise is None:
        sigma = value["noise_std"]
        total = total + td.HalfNormal(1.0).log_prob(sigma)
    y = Y_REF[likelihood]
    obs = {
        "gaussian": lambda: td.Normal(h, sigma).log_prob(y[:, None]).sum(-1),
        "student_t": lambda: td.StudentT(4.0, h, sigma).log_prob(y[:, None]).sum(-1),
        "bernoulli": lambda: td.Bernoulli(logits=h[:, 0]).log_prob(y),
        "categorical": lambda: td.Categorical(logits=h).log_prob(y),
    }[likelihood]()
    return total + 10 / 4 * obs.sum()


@pytest.mark.parametrize(("likelihood", "noise", "hierarchical"), list(RECORDED))
def test_bnn_trace_log_prob_is_unchanged_by_the_move(
    likelihood: str, noise: float | None, hierarchical: bool
):
    pyro.set_rng_seed(7)
    out = 3 if likelihood == "categorical" else 1
    prior = HierarchicalPrior() if hierarchical else None
    bnn = BNN(2, hidden=(5,), out_dim=out, likelihood=likelihood, noise_std=noise, prior=prior).double()
    trace = pyro.poutine.trace(bnn).get_trace(X_REF, Y_REF[likelihood], total_size=10)
    value = trace.log_prob_sum()
    assert float(value) == pytest.approx(RECORDED[(likelihood, noise, hierarchical)], rel=1e-12)
    assert torch.allclose(value, _independent_log_prob(trace, likelihood, noise, bnn.prior), rtol=1e-12)


def test_bnn_accepts_likelihood_instances_and_a_learnable_df() -> None:
    def log_prob(**kwargs) -> tuple[float, list[str]]:
        pyro.set_rng_seed(3)
        trace = pyro.poutine.trace(BNN(2, hidden=(5,), **kwargs).double()).get_trace(
            X_REF, Y_REF["student_t"]
        )
        return float(trace.log_prob_sum()), _sites(trace)

    assert log_prob(likelihood=Gaussian(0.3)) == log_prob(noise_std=0.3)
    assert log_prob(likelihood=StudentT(2.5)) == log_prob(likelihood="student_t", student_t_df=2.5)
    learnable, sites = log_prob(likelihood="student_t", student_t_df=None, noise_std=0.3)
    assert sites[-1] == "df" and (learnable, sites) == log_prob(likelihood=StudentT(None, 0.3))
    bnn = BNN(2, likelihood=StudentT(None))
    assert (
        isinstance(bnn.likelihood, StudentT)
        and bnn.noise_std is None
        and BNN(2, noise_std=0.3).noise_std == 0.3
    )


@pytest.mark.parametrize(
    ("kwargs", "error", "message"),
    [
        (
            {"likelihood": Gaussian(), "noise_std": 0.1},
            ValueError,
            "'noise_std' must be None with a Likelihood",
        ),
        (
            {"likelihood": "student_t", "student_t_df": 0.0},
            ValueError,
            "'student_t_df' must be a finite number > 0",
        ),
        ({"likelihood": Bernoulli(), "out_dim": 2}, ValueError, "'out_dim' must be 1 for a bernoulli"),
        ({"likelihood": 3}, ValueError, "'likelihood' must be one of .* or a Likelihood, got 3"),
    ],
)
def test_bad_likelihood_arguments(kwargs: dict, error: type[Exception], message: str) -> None:
    with pytest.raises(error, match=message):
        BNN(2, **kwargs)


def test_validate_checks_and_casts_y() -> None:
    y = Gaussian().validate(torch.arange(3), num_rows=3, out_dim=1, dtype=DT)
    assert y.shape == (3, 1) and y.dtype == DT
    assert (
        Categorical().validate(torch.tensor([0.0, 2.0]), num_rows=2, out_dim=3, dtype=DT).dtype == torch.int64
    )
    with pytest.raises(ValueError, match=r"categorical labels \(integers 0 to 2 for out_dim=3\), got 3"):
        Categorical().validate(torch.tensor([0, 3]), num_rows=2, out_dim=3, dtype=DT)
    with pytest.raises(ValueError, match=r"'y' must have shape \(2, 2\), got \(2, 3\)"):
        StudentT().validate(torch.zeros(2, 3), num_rows=2, out_dim=2, dtype=DT)
    with pytest.raises(TypeError, match="'y' must be a real tensor"):
        Bernoulli().validate([0, 1], num_rows=2, out_dim=1, dtype=DT)


# ------------------------------------------------------------------------------------------ mixture
def _mixture_case() -> tuple[torch.Tensor, torch.Tensor, torch.Tensor]:
    """K = 3 Gaussian components (σ = 0.8) over N = 5 rows with 2 outputs; rows 1 and 3 have an exact 0."""
    g = torch.Generator().manual_seed(1)
    f = torch.randn(3, 5, 2, generator=g, dtype=DT)
    y = torch.randn(5, 2, generator=g, dtype=DT)
    w = torch.rand(5, 3, generator=g, dtype=DT)
    w[1, 0] = 0.0
    w[3, 2] = 0.0
    return f, y, w / w.sum(-1, keepdim=True)


def _brute_force(f: torch.Tensor, y: torch.Tensor, w: torch.Tensor) -> torch.Tensor:
    """log Σ_k w_k exp(log N(y | f_k, σ²)), enumerating the components one by one."""
    rows = []
    for n in range(f.shape[1]):
        total = sum(w[n, k] * torch.exp(_gaussian(f[k, n], y[n], 0.8)) for k in range(f.shape[0]))
        rows.append(torch.log(total))
    return torch.stack(rows)


def test_mixture_equals_enumeration() -> None:
    f, y, w = _mixture_case()
    mixture = MixtureLikelihood(Gaussian(0.8))
    assert torch.allclose(mixture.log_prob(f, y, w), _brute_force(f, y, w), rtol=0, atol=1e-10)
    labels, logits = torch.tensor([0, 2, 1, 1, 0]), torch.randn(3, 5, 4, dtype=DT)
    brute = torch.log(sum(w[:, k] * torch.exp(_categorical(logits[k], labels)) for k in range(3)))
    assert torch.allclose(MixtureLikelihood(Categorical()).log_prob(logits, labels, w), brute, atol=1e-10)


def test_mixture_with_an_exact_zero_weight_has_finite_exact_gradients() -> None:
    """With w_k = 0 exactly: a finite value, d/dw_k = p_k(y)/p(y) (the true partial derivative, finite),
    and no gradient to the zero-weight component's outputs."""
    f, y, w = _mixture_case()
    f.requires_grad_(True)
    w.requires_grad_(True)
    value = MixtureLikelihood(Gaussian(0.8)).log_prob(f, y, w)
    assert bool(torch.isfinite(value).all())
    grad_f, grad_w = torch.autograd.grad(value.sum(), (f, w))
    assert bool(torch.isfinite(grad_f).all()) and bool(torch.isfinite(grad_w).all())
    assert torch.equal(grad_f[0, 1], torch.zeros(2, dtype=DT)) and torch.equal(
        grad_f[2, 3], torch.zeros(2, dtype=DT)
    )
    with torch.no_grad():
        p = torch.stack([torch.exp(_gaussian(f[k], y, 0.8)) for k in range(3)], -1)  # (N, K)
        expected = p / (w * p).sum(-1, keepdim=True)
    assert torch.allclose(grad_w, expected, rtol=1e-10)


def test_mixture_in_a_pyro_model_and_its_draws() -> None:
    """The obs site's log-prob is the mixture's, scaled by total_size / N; y=None draws follow the
    weights (P(y > 0) = 0.75 for components at -3 and +3 with weights 0.25, 0.75; 20000 draws, ±0.015 =
    5 standard errors)."""
    f, y, w = _mixture_case()
    mixture = MixtureLikelihood(Gaussian(0.8))
    trace = pyro.poutine.trace(lambda: mixture.sample("obs", f, y, weights=w, total_size=20)).get_trace()
    assert torch.allclose(trace.log_prob_sum(), 4 * _brute_force(f, y, w).sum(), atol=1e-10)
    torch.manual_seed(0)
    means = torch.tensor([-3.0, 3.0], dtype=DT).reshape(2, 1, 1).expand(2, 20000, 1)
    draws = mixture.sample("obs", means, None, weights=torch.tensor([0.25, 0.75], dtype=DT).expand(20000, 2))
    assert draws.shape == (20000, 1) and abs(float((draws > 0).double().mean()) - 0.75) < 0.015
    with pytest.raises(ValueError, match="'weights' must be >= 0 and sum to 1"):
        mixture.log_prob(f, y, w * 2)
    with pytest.raises(ValueError, match=r"'weights' must have shape \(\.\.\., N, K\) with K = 3"):
        mixture.log_prob(f, y, w[:, :2])


def test_mixture_of_latent_noise_shares_one_site() -> None:
    f, y, w = _mixture_case()
    trace = pyro.poutine.trace(
        lambda: MixtureLikelihood(Gaussian()).sample("obs", f, y, weights=w)
    ).get_trace()
    assert _sites(trace) == ["noise_std"]
    assert isinstance(trace.nodes["noise_std"]["fn"], dist.HalfNormal)
