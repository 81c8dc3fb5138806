"""Sparse variational Student-t process / SVGP classifier: ELBO pieces in closed form against torch's KL in
float64, the whitened conditional against a direct solve, the Gaussian limit, Pyro's ELBO and digits."""

from __future__ import annotations

import math
from pathlib import Path

import gpytorch
import pyro
import pytest
import torch
from pyro.infer import SVI, Trace_ELBO
from torch.distributions import Gamma, MultivariateNormal, kl_divergence

from bayesact.infer.checkpoint import load_checkpoint
from bayesact.kernels import NNGPKernel
from bayesact.models import StudentTProcessClassifier
from bayesact.models.processes.classifier import CHECKPOINT_FORMAT, kl_inverse_gamma

from .._scripts import load_script


def _data(n: int = 24, dtype: torch.dtype = torch.float64) -> tuple[torch.Tensor, torch.Tensor]:
    gen = torch.Generator().manual_seed(1)
    x = torch.randn(n, 2, generator=gen, dtype=dtype)
    return x, (x[:, 0] > 0).long() + (x[:, 1] > 0.5).long()


def _clf(gaussian: bool = False, m: int = 5, a: float = 3.0, b: float = 2.0) -> StudentTProcessClassifier:
    """An initialised classifier with a random (non-trivial) q."""
    x, y = _data()
    clf = StudentTProcessClassifier(gpytorch.kernels.RBFKernel().double(), 3, num_inducing=m, concentration=a,
                                    rate=b, gaussian=gaussian)  # fmt: skip
    clf.initialize(x, y)
    gen = torch.Generator().manual_seed(2)
    with torch.no_grad():
        clf.q_loc.copy_(torch.randn(clf.q_loc.shape, generator=gen, dtype=torch.float64))
        clf.q_tril_off.copy_(0.3 * torch.randn(clf.q_tril_off.shape, generator=gen, dtype=torch.float64))
        clf.q_tril_raw_diag.copy_(torch.randn(clf.q_tril_raw_diag.shape, generator=gen, dtype=torch.float64))
        if not gaussian:
            clf.q_raw_concentration.fill_(4.0)
            clf.q_raw_rate.fill_(1.5)
    return clf


def test_kl_inverse_gamma_is_the_gamma_kl_and_matches_monte_carlo() -> None:
    f64 = torch.float64
    alpha, beta = torch.tensor([0.7, 3.0, 40.0], dtype=f64), torch.tensor([2.0, 0.5, 35.0], dtype=f64)
    a, b = torch.tensor(2.5, dtype=f64), torch.tensor(1.3, dtype=f64)
    ours = kl_inverse_gamma(alpha, beta, a, b)
    ref = kl_divergence(Gamma(alpha, beta), Gamma(a, b))
    torch.testing.assert_close(ours, ref, rtol=1e-12, atol=1e-12)
    # E_q[log q(σ²) − log p(σ²)] over inverse-gamma draws (the KL is not Pyro's registered one)
    torch.manual_seed(0)
    q = pyro.distributions.InverseGamma(alpha[1], beta[1])
    p = pyro.distributions.InverseGamma(a, b)
    s = q.sample((400_000,))
    ratio = q.log_prob(s) - p.log_prob(s)
    assert abs(ratio.mean() - ours[1]) < 4 * ratio.std() / math.sqrt(len(s))


def test_kl_inducing_is_torch_gaussian_kl_averaged_over_q_sigma2() -> None:
    """KL(N(m, σ²S) ‖ N(0, σ²I)) = A + B/σ² (the covariance terms do not depend on σ², the mean term
    does); the classifier's term is A + B·E_q[1/σ²] = A + B·α/β, summed over the classes."""
    clf = _clf()
    tril = clf.scale_tril().detach()
    loc = clf.q_loc.detach()

    def torch_kl(scale: float) -> torch.Tensor:
        q = MultivariateNormal(loc, scale_tril=math.sqrt(scale) * tril)
        eye = torch.eye(loc.shape[-1], dtype=torch.float64)
        p = MultivariateNormal(torch.zeros_like(loc), scale_tril=math.sqrt(scale) * eye)
        return kl_divergence(q, p).sum()

    k1, k2, k3 = torch_kl(1.0), torch_kl(0.5), torch_kl(4.0)
    const, slope = 2 * k1 - k2, k2 - k1  # A + B/1 and A + B/0.5
    torch.testing.assert_close(k3, const + slope / 4.0, rtol=1e-12, atol=1e-10)
    alpha, beta = clf.scale_posterior()
    expected = const + slope * (alpha / beta).detach()
    torch.testing.assert_close(clf.kl_inducing().detach(), expected, rtol=1e-12, atol=1e-10)
    svgp = _clf(gaussian=True)
    torch.testing.assert_close(svgp.kl_inducing().detach(), k1, rtol=1e-12, atol=1e-10)
    assert svgp.kl_scale().item() == 0.0


def test_latent_is_the_kernel_conditional_and_predict_at_z_with_s_to_0() -> None:
    """With S → 0 and σ² fixed, q(f(x)) has the kernel's conditional mean K_xZ K_ZZ⁻¹u (u = L m) and
    variance σ²(k(x, x) − K_xZ K_ZZ⁻¹K_Zx); at x = Z the predictive is softmax(u)."""
    clf = _clf(m=6)
    with torch.no_grad():
        clf.q_tril_off.zero_()
        clf.q_tril_raw_diag.fill_(-40.0)  # S = softplus(−40)² I ≈ 1.8e-35 I
        clf.q_raw_concentration.fill_(1e7)  # q(σ²) ≈ δ(β/α) with β/α = 0.5
        clf.q_raw_rate.fill_(5e6)
    x, _ = _data(40)
    z = clf.inducing_points.detach()
    k = clf.kernel
    kzz = k(z, z).to_dense().detach()
    kzz = kzz + clf.jitter * kzz.diagonal().mean() * torch.eye(len(z), dtype=kzz.dtype)
    u = clf.q_loc.detach() @ torch.linalg.cholesky(kzz).mT  # u_c = L m_c, rows (C, M)
    kxz = k(x, z).to_dense().detach()
    mean_ref = kxz @ torch.linalg.solve(kzz, u.mT)
    var_ref = 1.0 - (kxz * torch.linalg.solve(kzz, kxz.mT).mT).sum(-1)  # RBF: k(x, x) = 1
    mean, var = clf.latent(x)
    torch.testing.assert_close(mean.detach(), mean_ref, rtol=1e-9, atol=1e-9)
    torch.testing.assert_close(var.detach(), var_ref[:, None].expand(-1, 3), rtol=1e-6, atol=1e-9)
    torch.manual_seed(0)
    probs = clf.predict(z, num_samples=200).probs
    torch.testing.assert_close(probs, torch.softmax(u.mT, -1), rtol=0, atol=2e-3)


def test_large_concentration_is_the_svgp() -> None:
    """a = b → ∞ (σ² → 1) with q(σ²) = p(σ²): KL(q(σ²) ‖ p(σ²)) = 0, the inducing KL and q(f | σ²) are the
    SVGP's and q(σ²) concentrates at 1 (sd 1e-3), so the ELBO is the SVGP's."""
    tp = _clf(a=1e6, b=1e6)
    gp = _clf(gaussian=True)
    with torch.no_grad():
        tp.q_raw_concentration.fill_(1e6)
        tp.q_raw_rate.fill_(1e6)
    assert abs(tp.kl_scale().item()) < 1e-9
    torch.testing.assert_close(tp.kl_inducing(), gp.kl_inducing(), rtol=1e-9, atol=1e-9)
    x, y = _data()
    for a, b in zip(tp.latent(x), gp.latent(x), strict=True):
        torch.testing.assert_close(a, b, rtol=0, atol=0)
    # q(σ²) = InverseGamma(α, β): mean β/(α − 1), sd mean/√(α − 2) (that the ELBO draws σ² from it is
    # test_expected_log_likelihood_draws_sigma2_from_q)
    alpha, beta = (t.detach().item() for t in tp.scale_posterior())
    mean = beta / (alpha - 1)
    assert abs(mean - 1.0) < 1e-5 and abs(mean / math.sqrt(alpha - 2) - 1e-3) < 1e-6
    e_tp = tp.elbo(x, y, num_samples=2000).item()
    e_gp = gp.elbo(x, y, num_samples=2000).item()
    assert abs(e_tp - e_gp) < 0.5, (e_tp, e_gp)  # independent MC estimates, sd about 0.1 each


def test_expected_log_likelihood_draws_sigma2_from_q() -> None:
    """Σ_n E_q[log softmax(f(x_n))_{y_n}] with σ² ~ q(σ²) = InverseGamma(α, β) = (2.5, 3) and f | σ² ~
    N(μ, σ² s²) from the public ``scale_posterior`` and ``latent``, against an independent Monte Carlo
    estimate with σ² drawn by SciPy (40,000 draws each, within 4 combined standard errors: 0.31). Measured:
    -43.465 against -43.609 ± 0.056; σ² fixed at its mean would give -44.48, σ² = 1 -39.13."""
    scipy_stats = pytest.importorskip("scipy.stats")
    tp = _clf()
    with torch.no_grad():  # q(σ²) with a heavy right tail (softplus⁻¹(v) = log(expm1(v)))
        tp.q_raw_concentration.fill_(math.log(math.expm1(2.5)))
        tp.q_raw_rate.fill_(math.log(math.expm1(3.0)))
    alpha, beta = (t.detach().item() for t in tp.scale_posterior())
    assert (alpha, beta) == pytest.approx((2.5, 3.0), rel=1e-12)
    x, y = _data()
    num = 40_000
    torch.manual_seed(0)
    with torch.no_grad():
        ours = tp.expected_log_likelihood(x, y, num_samples=num).item()
        mean, var = tp.latent(x)
    scale2 = torch.from_numpy(scipy_stats.invgamma(alpha, scale=beta).rvs(num, random_state=3))
    eps = torch.randn(num, *mean.shape, generator=torch.Generator().manual_seed(5), dtype=torch.float64)
    f = mean + (scale2[:, None, None] * var).sqrt() * eps
    per_draw = torch.log_softmax(f, -1).gather(-1, y.expand(num, -1)[..., None]).squeeze(-1).sum(-1)
    ref, se = per_draw.mean().item(), per_draw.std().item() / math.sqrt(num)
    assert abs(ours - ref) < 4 * math.sqrt(2) * se, (ours, ref, se)


def test_pyro_trace_elbo_estimates_the_closed_form_elbo_and_svi_trains_the_kernel() -> None:
    clf = _clf(m=4)
    x, y = _data(10)
    pyro.clear_param_store()
    torch.manual_seed(0)
    with torch.no_grad():
        draws = torch.tensor([-Trace_ELBO().loss(clf, clf.guide, x, y) for _ in range(150)])
        ref = clf.elbo(x, y, num_samples=20000).item()
    assert abs(draws.mean().item() - ref) < 4 * draws.std().item() / math.sqrt(len(draws)) + 0.05
    lengthscale = clf.kernel.lengthscale.item()
    svi = SVI(clf, clf.guide, pyro.optim.Adam({"lr": 0.05}), Trace_ELBO())
    losses = [svi.step(x, y) for _ in range(60)]
    assert sum(losses[-10:]) < sum(losses[:10])
    assert abs(clf.kernel.lengthscale.item() - lengthscale) > 1e-2


@pytest.mark.parametrize("dtype", [torch.float32, torch.float64])
def test_dtypes_and_gradients(dtype: torch.dtype) -> None:
    x, y = _data(dtype=dtype)
    for gaussian in (False, True):
        clf = StudentTProcessClassifier(NNGPKernel("relu", depth=1), 3, num_inducing=8, gaussian=gaussian)
        clf.initialize(x, y)
        elbo = clf.elbo(x, y, num_samples=4)
        assert elbo.dtype == dtype and torch.isfinite(elbo)
        grads = torch.autograd.grad(elbo, [p for p in clf.parameters() if p.requires_grad])
        assert all(torch.isfinite(g).all() for g in grads)
        probs = clf.predict(x, num_samples=10).probs
        assert probs.dtype == dtype and torch.allclose(probs.sum(-1), torch.ones((), dtype=dtype))


def test_state_dict_round_trip() -> None:
    x, y = _data()
    src = _clf()
    dst = StudentTProcessClassifier(gpytorch.kernels.RBFKernel().double(), 3, num_inducing=5,
                                    concentration=3.0, rate=2.0)
    dst.initialize(x, y, seed=7)
    dst.load_state_dict(src.state_dict())
    for a, b in zip(src.latent(x), dst.latent(x), strict=True):
        torch.testing.assert_close(a, b, rtol=0, atol=0)
    torch.testing.assert_close(src.kl_scale(), dst.kl_scale(), rtol=0, atol=0)


def _fit_clf(gaussian: bool = False) -> StudentTProcessClassifier:
    kernel = gpytorch.kernels.RBFKernel().double()
    return StudentTProcessClassifier(kernel, 3, num_inducing=5, gaussian=gaussian)


@pytest.mark.parametrize(("gaussian", "validate"), [(False, False), (True, True)])
def test_fit_resumed_after_ctrl_c_equals_the_uninterrupted_fit(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch, gaussian: bool, validate: bool
) -> None:
    # regression: fit had no checkpoint or resume, and Ctrl-C kept a half-done epoch
    x, y = _data(24)
    validation = _data(30) if validate else None
    options = {"batch_size": 8, "lr": 0.05, "num_samples": 4, "validation": validation, "progress": False,
               "seed": 0}
    full = _fit_clf(gaussian)
    losses = full.fit(x, y, num_epochs=6, **options)
    three = _fit_clf(gaussian)
    three_losses = three.fit(x, y, num_epochs=3, **options)
    assert three_losses == losses[:3]
    path = tmp_path / "clf.ckpt"
    elbo, calls = StudentTProcessClassifier.elbo, []

    def ctrl_c_in_epoch_4(self: StudentTProcessClassifier, *args: object, **kwargs: object) -> torch.Tensor:
        calls.append(1)
        if len(calls) == 3 * 3 + 2:  # three batches per epoch: the second batch of epoch 4
            raise KeyboardInterrupt
        return elbo(self, *args, **kwargs)  # type: ignore[arg-type]

    monkeypatch.setattr(StudentTProcessClassifier, "elbo", ctrl_c_in_epoch_4)
    part = _fit_clf(gaussian)
    with pytest.warns(RuntimeWarning, match="interrupted after 3 epochs"):
        kept = part.fit(x, y, num_epochs=6, checkpoint=path, checkpoint_every=2, **options)
    monkeypatch.setattr(StudentTProcessClassifier, "elbo", elbo)
    # Ctrl-C keeps the fit of the completed epochs (with validation: the best of them), exactly
    assert kept == losses[:3]
    for (name, a), b in zip(three.state_dict().items(), part.state_dict().values(), strict=True):
        assert torch.equal(a, b), name
    saved = load_checkpoint(path, CHECKPOINT_FORMAT)  # a safe file, read with weights_only=True
    assert saved["losses"] == losses[:3]
    resumed = _fit_clf(gaussian)
    assert resumed.fit(x, y, num_epochs=6, checkpoint=path, resume=True, **options) == losses
    for (name, a), b in zip(full.state_dict().items(), resumed.state_dict().values(), strict=True):
        assert torch.equal(a, b), name
    assert load_checkpoint(path, CHECKPOINT_FORMAT)["losses"] == losses  # written at the end


def test_fit_resume_refuses_other_data_or_settings(tmp_path: Path) -> None:
    x, y = _data(24)
    path = tmp_path / "clf.ckpt"
    _fit_clf().fit(x, y, num_epochs=2, batch_size=8, progress=False, seed=0, checkpoint=path)
    with pytest.raises(ValueError, match="'batch_size' is 12"):
        _fit_clf().fit(x, y, num_epochs=3, batch_size=12, progress=False, checkpoint=path, resume=True)
    with pytest.raises(ValueError, match="different values"):
        _fit_clf().fit(x + 1, y, num_epochs=3, batch_size=8, progress=False, checkpoint=path, resume=True)
    with pytest.raises(ValueError, match="needs an existing 'checkpoint'"):
        _fit_clf().fit(x, y, batch_size=8, progress=False, checkpoint=tmp_path / "none.ckpt", resume=True)
    with pytest.raises(ValueError, match="directory"):
        _fit_clf().fit(x, y, progress=False, checkpoint=tmp_path / "missing" / "c.ckpt")
    with pytest.raises(ValueError, match="checkpoint_every"):
        _fit_clf().fit(x, y, progress=False, checkpoint=path, checkpoint_every=0)


def _digits(n_train: int, n_test: int) -> tuple[torch.Tensor, torch.Tensor, torch.Tensor, torch.Tensor]:
    from sklearn.datasets import load_digits

    x, y = load_digits(return_X_y=True)
    perm = torch.randperm(len(x), generator=torch.Generator().manual_seed(0))
    xt, yt = torch.tensor(x / 16.0)[perm], torch.tensor(y)[perm]
    return xt[:n_train], yt[:n_train], xt[-n_test:], yt[-n_test:]


def test_digits_subset_both_beat_chance() -> None:
    """300 training digits, 200 test digits, 30 inducing points, 15 epochs: both well above chance
    (accuracy 0.1, NLL log 10 = 2.30); measured about 0.88 accuracy and NLL 0.5 for both."""
    x, y, xt, yt = _digits(300, 200)
    for gaussian in (False, True):
        kernel = gpytorch.kernels.ScaleKernel(gpytorch.kernels.RBFKernel()).double()
        kernel.base_kernel.lengthscale = 3.0
        clf = StudentTProcessClassifier(kernel, 10, num_inducing=30, gaussian=gaussian)
        losses = clf.fit(x, y, num_epochs=15, batch_size=100, lr=0.03, progress=False, seed=0)
        assert losses[-1] < losses[0]
        pred = clf.predict(xt, num_samples=100)
        acc = (pred.probs.argmax(-1) == yt).double().mean().item()
        nll = -pred.log_prob(yt).mean().item()
        assert acc > 0.6 and nll < math.log(10) - 1.0, (gaussian, acc, nll)


def test_bad_input() -> None:
    x, y = _data()
    kernel = gpytorch.kernels.RBFKernel()
    with pytest.raises(TypeError, match="kernel"):
        StudentTProcessClassifier(lambda a, b: a, 3)
    with pytest.raises(ValueError, match="num_classes"):
        StudentTProcessClassifier(kernel, 1)
    with pytest.raises(TypeError, match="num_inducing"):
        StudentTProcessClassifier(kernel, 3, num_inducing=2.0)  # type: ignore[arg-type]
    with pytest.raises(ValueError, match="num_inducing"):
        StudentTProcessClassifier(kernel, 3, num_inducing=0)
    for bad in (0.0, -1.0, float("nan")):
        with pytest.raises(ValueError, match="concentration"):
            StudentTProcessClassifier(kernel, 3, concentration=bad)
        with pytest.raises(ValueError, match="rate"):
            StudentTProcessClassifier(kernel, 3, rate=bad)
    with pytest.raises(TypeError, match="gaussian"):
        StudentTProcessClassifier(kernel, 3, gaussian=1)  # type: ignore[arg-type]
    clf = StudentTProcessClassifier(kernel, 3, num_inducing=4)
    with pytest.raises(RuntimeError, match="initialize"):
        clf.predict(x)
    with pytest.raises(ValueError, match="'y'.*labels in"):
        clf.fit(x, y + 1, progress=False)
    with pytest.raises(TypeError, match="'y'.*integer"):
        clf.fit(x, y.double(), progress=False)
    with pytest.raises(ValueError, match="'y'.*shape"):
        clf.fit(x, y[:-1], progress=False)
    x_bad = x.clone()
    x_bad[0, 0] = float("nan")
    with pytest.raises(ValueError, match="'x'.*NaN"):
        clf.fit(x_bad, y, progress=False)
    for name in ("num_epochs", "batch_size", "num_samples"):
        with pytest.raises(ValueError, match=name):
            clf.fit(x, y, progress=False, **{name: 0})
    with pytest.raises(ValueError, match="lr"):
        clf.fit(x, y, lr=-1.0, progress=False)
    clf.initialize(x, y)
    with pytest.raises(ValueError, match="'x'.*columns"):
        clf.predict(x[:, :1])
    with pytest.raises(ValueError, match="num_samples"):
        clf.predict(x, num_samples=0)
    with pytest.raises(TypeError, match="validation"):
        clf.fit(x, y, num_epochs=1, validation=x, progress=False)  # type: ignore[arg-type]


@pytest.mark.slow
def test_digits_experiment_one_seed() -> None:
    """examples/process_classification.py on seed 0 with its defaults: both models far above chance, clean
    and shifted (the SVTP-vs-SVGP ordering is measured and reported in docs/processes.md, not asserted)."""
    import argparse

    module = load_script("examples/process_classification.py")
    args = argparse.Namespace(epochs=30, inducing=100, progress=False)
    res = module.run_seed(0, args)
    print(module.table([res]))
    for model in ("SVGP", "SVTP"):
        assert res[f"clean {model}"]["acc"] > 0.9 and res[f"clean {model}"]["nll"] < 0.5
        assert res[f"noise 0.25 {model}"]["acc"] > 0.5
        assert res[f"drop {model}"]["acc"] > 0.9
