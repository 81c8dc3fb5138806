"""``StudentTProcessClassifier``: the sparse variational Student-t process (SVTP) and, as a flag, the SVGP."""

from __future__ import annotations

import copy
import math
import os

import pyro
import pyro.distributions as dist
import torch
from pyro.nn import PyroModule, pyro_method
from torch import Tensor
from torch.nn import functional as F
from tqdm.auto import tqdm

from bayesact.infer import is_concrete
from bayesact.infer.arguments import check_checkpoint_path
from bayesact.infer.checkpoint import check_fingerprint, data_fingerprint, load_checkpoint, save_checkpoint
from bayesact.infer.phases import Phase, run_phases, warn_user
from bayesact.models.processes._base import claim_param_store
from bayesact.models.processes._core import check_kernel, check_positive, check_x, cholesky, kernel_matrix

__all__ = ["CHECKPOINT_FORMAT", "StudentTProcessClassifier", "kl_inverse_gamma"]


CHECKPOINT_FORMAT = "bayesact.models.processes.classifier-checkpoint/1"


def _rng_state(device: torch.device) -> tuple[Tensor, Tensor | None]:
    """torch's global CPU random state, and the CUDA one of ``device`` when it is a GPU."""
    return torch.get_rng_state(), torch.cuda.get_rng_state(device) if device.type == "cuda" else None


def _set_rng_state(state: tuple[Tensor, Tensor | None], device: torch.device) -> None:
    cpu, cuda = state
    torch.set_rng_state(cpu)
    if cuda is not None and device.type == "cuda":
        torch.cuda.set_rng_state(cuda, device)


def _softplus_inv(value: float) -> float:
    return value + math.log(-math.expm1(-value))


def _check_int(name: str, value: object, low: int) -> int:
    if isinstance(value, bool) or not isinstance(value, int):
        raise TypeError(f"'{name}' must be an int >= {low}, got {type(value).__name__}")
    if value < low:
        raise ValueError(f"'{name}' must be an int >= {low}, got {value}")
    return value


def kl_inverse_gamma(alpha: Tensor, beta: Tensor, a: Tensor | float, b: Tensor | float) -> Tensor:
    """KL(IG(α, β) ‖ IG(a, b)) = KL(Gamma(α, β) ‖ Gamma(a, b)) (σ² ↦ 1/σ² is a bijection):
    (α − a)ψ(α) − log Γ(α) + log Γ(a) + a(log β − log b) + α(b − β)/β."""
    a = torch.as_tensor(a, dtype=alpha.dtype, device=alpha.device)
    b = torch.as_tensor(b, dtype=alpha.dtype, device=alpha.device)
    return (
        (alpha - a) * torch.digamma(alpha) - torch.lgamma(alpha) + torch.lgamma(a)
        + a * (torch.log(beta) - torch.log(b)) + alpha * (b - beta) / beta
    )


class StudentTProcessClassifier(PyroModule):
    """Sparse variational Student-t process classifier (SVTP; Lee et al., "Scale Mixtures of Neural Network
    Gaussian Processes", ICLR 2022), or the sparse variational GP (SVGP; Hensman et al., AISTATS 2015) with
    ``gaussian=True``.

    Model: σ² ~ InverseGamma(a, b); ``num_classes`` latent functions f_c = σ·g_c with g_c ~ GP(0, k)
    independent; y | f ~ Categorical(softmax(f(x))). The inducing values at M shared inducing inputs Z are
    **whitened**: u_c = f_c(Z) = L v_c with K_ZZ = L Lᵀ, so p(v_c | σ²) = N(0, σ² I).

    Variational family: q(σ²) = InverseGamma(α, β) and q(v_c | σ²) = N(m_c, σ² S_c) with a full
    S_c = L_c L_cᵀ (the reference code's diagonal S is one of its pitfalls); unwhitened,
    q(u_c | σ²) = N(L m_c, σ² L S_c Lᵀ). The ELBO is

        Σ_n E_q[log softmax(f(x_n))_{y_n}] − KL(q(σ²) ‖ p(σ²)) − E_q(σ²) Σ_c KL(q(v_c | σ²) ‖ p(v_c | σ²)),

    with the last term ½ Σ_c [tr S_c − log|S_c| − M + (α/β)·m_cᵀm_c]: the covariance terms do not depend
    on σ² because both covariances scale with it, the mean term does, through E_q[1/σ²] = α/β. Given σ²,
    q(f_c(x) | σ²) = N(μ_c(x), σ² s_c(x)²) with μ_c = a(x)ᵀm_c, s_c² = k(x, x) − ‖a(x)‖² + ‖L_cᵀa(x)‖²,
    a(x) = L⁻¹k(Z, x); over q(σ²), f_c(x) is Student-t with 2α degrees of freedom. The expected
    log-likelihood is estimated by Monte Carlo over σ² (reparameterised) and f. As a → ∞ with b/a fixed,
    the model tends to the SVGP with kernel (b/a)·k; ``gaussian=True`` fixes σ² = 1 (no q(σ²)).

    The kernel's overall scale and b/a trade off against each other: fix one (the reference fixes the
    readout weight std to 1). The inducing inputs are chosen per class from the training data at the first
    :meth:`fit` (or set by :meth:`initialize`); Z, the kernel's hyperparameters, m, S, α and β are learned.

    Args:
        kernel: any ``gpytorch.kernels.Kernel``.
        num_classes: number of classes C >= 2.
        num_inducing: number of inducing inputs M (at most the number of training points).
        concentration: prior shape a > 0 of σ².
        rate: prior rate b > 0 of σ².
        gaussian: the SVGP (σ² = 1) instead of the Student-t process.
        jitter: added to K_ZZ's diagonal, relative to its mean diagonal.
    """

    def __init__(
        self,
        kernel: object,
        num_classes: int,
        num_inducing: int = 200,
        concentration: float = 2.0,
        rate: float = 2.0,
        gaussian: bool = False,
        jitter: float = 1e-5,
    ) -> None:
        super().__init__()
        self.kernel = check_kernel(kernel)
        self.num_classes = _check_int("num_classes", num_classes, 2)
        self.num_inducing = _check_int("num_inducing", num_inducing, 1)
        self.concentration = check_positive("concentration", concentration)
        self.rate = check_positive("rate", rate)
        if not isinstance(gaussian, bool):
            raise TypeError(f"'gaussian' must be a bool, got {type(gaussian).__name__}")
        self.gaussian = gaussian
        self.jitter = check_positive("jitter", jitter)
        self.inducing_points: torch.nn.Parameter | None = None

    # ---------------------------------------------------------------- set-up
    @staticmethod
    def select_inducing(x: Tensor, y: Tensor, num_inducing: int, num_classes: int, seed: int = 0) -> Tensor:
        """``num_inducing`` rows of ``x``, as evenly over the classes of ``y`` as they allow (seeded)."""
        gen = torch.Generator().manual_seed(seed)
        m = min(num_inducing, x.shape[0])
        labels = y.cpu()
        per_class = [torch.nonzero(labels == c).flatten() for c in range(num_classes)]
        per_class = [idx[torch.randperm(len(idx), generator=gen)] for idx in per_class]
        chosen: list[Tensor] = []
        quota = [m // num_classes + (1 if c < m % num_classes else 0) for c in range(num_classes)]
        for idx, q in zip(per_class, quota, strict=True):
            chosen.append(idx[:q])
        taken = torch.cat(chosen)
        if len(taken) < m:  # small classes: fill from the remaining points
            mask = torch.ones(x.shape[0], dtype=torch.bool)
            mask[taken] = False
            rest = torch.nonzero(mask).flatten()
            rest = rest[torch.randperm(len(rest), generator=gen)[: m - len(taken)]]
            taken = torch.cat([taken, rest])
        return x[taken.to(x.device)].detach().clone()

    def initialize(self, x: Tensor, y: Tensor | None = None, seed: int = 0) -> None:
        """Create Z (from ``x``, per class of ``y`` when given) and q at its initial state: m = 0, S = I and,
        for the Student-t process, q(σ²) = p(σ²). Parameters take ``x``'s dtype and device."""
        x = check_x(x)
        if y is not None:
            y = self._check_labels(y, x.shape[0])
            z = self.select_inducing(x, y, self.num_inducing, self.num_classes, seed)
        else:
            order = torch.randperm(x.shape[0], generator=torch.Generator().manual_seed(seed))
            z = x[order[: self.num_inducing].to(x.device)]
        m, c = z.shape[0], self.num_classes

        def param(value: Tensor | float, *shape: int) -> torch.nn.Parameter:
            t = torch.as_tensor(value, dtype=x.dtype, device=x.device)
            return torch.nn.Parameter(t.expand(shape).clone())

        self.inducing_points = torch.nn.Parameter(z.detach().clone())
        self.q_loc = param(0.0, c, m)
        self.q_tril_off = param(0.0, c, m, m)
        self.q_tril_raw_diag = param(_softplus_inv(1.0), c, m)
        if not self.gaussian:
            self.q_raw_concentration = param(_softplus_inv(self.concentration))
            self.q_raw_rate = param(_softplus_inv(self.rate))

    def _check_labels(self, y: object, n: int, name: str = "y") -> Tensor:
        if not isinstance(y, Tensor):
            raise TypeError(f"'{name}' must be a torch.Tensor of class labels, got {type(y).__name__}")
        if y.shape != (n,):
            raise ValueError(f"'{name}' must have shape (N,) = ({n},) to match 'x', got {tuple(y.shape)}")
        if y.is_floating_point() or y.is_complex() or y.dtype == torch.bool:
            raise TypeError(f"'{name}' must hold integer class labels, got {y.dtype}")
        if n and is_concrete(y) and (int(y.min()) < 0 or int(y.max()) >= self.num_classes):
            raise ValueError(f"'{name}' must hold labels in [0, num_classes) = [0, {self.num_classes}), got "
                             f"[{int(y.min())}, {int(y.max())}]")  # fmt: skip
        return y.long()

    def _require_initialized(self) -> Tensor:
        if self.inducing_points is None:
            raise RuntimeError("the classifier is not initialized: call fit(x, y) or initialize(x, y) first")
        return self.inducing_points

    # ---------------------------------------------------------------- variational parameters
    def scale_tril(self, like: Tensor | None = None) -> Tensor:
        """L_c (C, M, M), lower triangular with a positive diagonal: S_c = L_c L_cᵀ."""
        self._require_initialized()
        off: Tensor = self.q_tril_off
        diag: Tensor = self.q_tril_raw_diag
        if like is not None:
            off, diag = off.to(like.dtype), diag.to(like.dtype)
        return torch.tril(off, -1) + torch.diag_embed(F.softplus(diag))

    def scale_posterior(self, like: Tensor | None = None) -> tuple[Tensor, Tensor]:
        """(α, β) of q(σ²) = InverseGamma(α, β) (``gaussian=True``: ValueError)."""
        self._require_initialized()
        if self.gaussian:
            raise ValueError("a gaussian=True classifier has no q(σ²): σ² = 1")
        alpha, beta = F.softplus(self.q_raw_concentration), F.softplus(self.q_raw_rate)
        if like is not None:
            alpha, beta = alpha.to(like.dtype), beta.to(like.dtype)
        return alpha, beta

    # ---------------------------------------------------------------- ELBO pieces
    def kl_scale(self, like: Tensor | None = None) -> Tensor:
        """KL(q(σ²) ‖ p(σ²)) in closed form (0 for the SVGP)."""
        if self.gaussian:
            z = self._require_initialized()
            return torch.zeros((), dtype=z.dtype if like is None else like.dtype)
        alpha, beta = self.scale_posterior(like)
        return kl_inverse_gamma(alpha, beta, self.concentration, self.rate)

    def kl_inducing(self, like: Tensor | None = None) -> Tensor:
        """E_q(σ²) Σ_c KL(N(m_c, σ²S_c) ‖ N(0, σ²I)) = ½ Σ_c [tr S_c − log|S_c| − M + E_q[1/σ²]·m_cᵀm_c]."""
        tril = self.scale_tril(like)
        loc = self.q_loc if like is None else self.q_loc.to(like.dtype)
        m = loc.shape[-1]
        if self.gaussian:
            inv_scale = torch.ones((), dtype=loc.dtype, device=loc.device)
        else:
            alpha, beta = self.scale_posterior(like)
            inv_scale = alpha / beta
        diag = torch.diagonal(tril, dim1=-2, dim2=-1)
        trace = (tril * tril).sum((-2, -1))
        logdet = 2 * torch.log(diag).sum(-1)
        return 0.5 * (trace - logdet - m + inv_scale * (loc * loc).sum(-1)).sum()

    def _project(self, x: Tensor) -> tuple[Tensor, Tensor]:
        """a(x) = L⁻¹k(Z, x) (M, B) and k(x, x) (B,)."""
        z = self._require_initialized().to(x.dtype)
        kzz = kernel_matrix(self.kernel, z).clone()
        kzz.diagonal().add_(self.jitter * kzz.diagonal().mean())
        chol = cholesky(kzz, "the inducing kernel matrix K(Z, Z)")
        proj = torch.linalg.solve_triangular(chol, kernel_matrix(self.kernel, z, x), upper=False)
        kxx = self.kernel(x, diag=True).to(x.dtype)
        return proj, kxx

    def latent(self, x: Tensor) -> tuple[Tensor, Tensor]:
        """q(f(x) | σ²) = N(mean, σ²·var): the mean μ (B, C) and the per-unit-σ² variance s² (B, C)."""
        x = check_x(x, dim=self._require_initialized().shape[1])
        proj, kxx = self._project(x)
        loc, tril = self.q_loc.to(x.dtype), self.scale_tril(x)
        mean = (loc @ proj).mT
        cond = (kxx - (proj * proj).sum(0)).clamp(min=0.0)  # k(x, x) − Q(x, x)
        spread = (torch.matmul(tril.mT, proj) ** 2).sum(-2)  # ‖L_cᵀ a(x)‖², (C, B)
        return mean, (cond + spread).mT

    def _scale_draws(self, num_samples: int, like: Tensor) -> Tensor:
        if self.gaussian:
            return torch.ones(num_samples, dtype=like.dtype, device=like.device)
        alpha, beta = self.scale_posterior(like)
        return dist.InverseGamma(alpha, beta).rsample((num_samples,))

    def _latent_draws(self, x: Tensor, num_samples: int) -> Tensor:
        """``num_samples`` reparameterised draws of f(x) from q: (S, B, C)."""
        mean, var = self.latent(x)
        scales = self._scale_draws(num_samples, x)
        eps = torch.randn(num_samples, *mean.shape, dtype=x.dtype, device=x.device)
        return mean + (scales[:, None, None] * var).sqrt() * eps

    def expected_log_likelihood(self, x: Tensor, y: Tensor, num_samples: int = 16) -> Tensor:
        """Monte Carlo Σ_n E_q[log softmax(f(x_n))_{y_n}] over ``num_samples`` joint draws of σ² and f."""
        y = self._check_labels(y, x.shape[0])
        f = self._latent_draws(x, _check_int("num_samples", num_samples, 1))
        return dist.Categorical(logits=f).log_prob(y).mean(0).sum()

    def elbo(self, x: Tensor, y: Tensor, num_samples: int = 16, num_data: int | None = None) -> Tensor:
        """ELBO estimate; a minibatch (x, y) of a set of ``num_data`` points is scaled by num_data / B."""
        x = check_x(x, dim=self._require_initialized().shape[1])
        n = x.shape[0] if num_data is None else _check_int("num_data", num_data, 1)
        ell = self.expected_log_likelihood(x, y, num_samples) * (n / x.shape[0])
        return ell - self.kl_scale(x) - self.kl_inducing(x)

    # ---------------------------------------------------------------- prediction
    def predict(self, x: Tensor, num_samples: int = 1000, batch_size: int = 512) -> dist.Categorical:
        """Posterior predictive Categorical with probs E_q[softmax(f(x))] (Monte Carlo, ``num_samples``)."""
        x = check_x(x, dim=self._require_initialized().shape[1])
        num_samples = _check_int("num_samples", num_samples, 1)
        batch_size = _check_int("batch_size", batch_size, 1)
        with torch.no_grad():
            probs = [
                torch.softmax(self._latent_draws(xb, num_samples), -1).mean(0) for xb in x.split(batch_size)
            ]
        return dist.Categorical(probs=torch.cat(probs))

    # ---------------------------------------------------------------- fitting
    def fit(
        self,
        x: Tensor,
        y: Tensor,
        num_epochs: int = 100,
        batch_size: int = 100,
        lr: float = 1e-2,
        num_samples: int = 16,
        validation: tuple[Tensor, Tensor] | None = None,
        progress: bool = True,
        seed: int | None = None,
        *,
        checkpoint: str | os.PathLike | None = None,
        checkpoint_every: int = 10,
        resume: bool = False,
    ) -> list[float]:
        """Maximise the ELBO with Adam on shuffled minibatches; returns −ELBO/N per epoch.

        ``ReduceLROnPlateau`` (factor 0.5, patience 5) on the epoch loss, stopping once the learning rate
        falls below 1e-4. With ``validation=(x_val, y_val)`` the state with the lowest validation NLL
        (100 predictive samples) is kept. The first call chooses the inducing inputs (:meth:`initialize`);
        ``seed`` seeds torch's global generator (minibatches, draws). To reload a fit, :meth:`initialize`
        on data of the same width, then ``load_state_dict``.

        Runs through :func:`bayesact.infer.phases.run_phases` (a progress bar on a terminal or in a
        notebook only). Ctrl-C returns the fit of the epochs completed so far (the unfinished epoch is
        undone, with a RuntimeWarning). With ``checkpoint``, the fit (parameters, optimizer and
        scheduler, losses, the best validation state, the random state at the start of the next epoch)
        is saved every ``checkpoint_every`` epochs, at the end and on Ctrl-C, atomically as a bayesact
        safe file (:func:`bayesact.infer.checkpoint.save_checkpoint`); ``resume=True`` continues from
        it (read with ``weights_only=True``; the same data and settings are required, ``num_epochs`` is
        the total and may grow): on CPU the result equals the uninterrupted fit.
        """
        x = check_x(x)
        y = self._check_labels(y, x.shape[0])
        num_epochs = _check_int("num_epochs", num_epochs, 1)
        batch_size = _check_int("batch_size", batch_size, 1)
        num_samples = _check_int("num_samples", num_samples, 1)
        checkpoint_every = _check_int("checkpoint_every", checkpoint_every, 1)
        check_positive("lr", lr)
        if not isinstance(resume, bool):
            raise TypeError(f"'resume' must be a bool, got {type(resume).__name__}")
        path = check_checkpoint_path(checkpoint)
        data: tuple[Tensor, ...] = (x, y)
        if validation is not None:
            if not isinstance(validation, tuple | list) or len(validation) != 2:
                raise TypeError("'validation' must be a tuple (x_val, y_val)")
            x_val = check_x(validation[0], "validation[0]", dim=x.shape[1])
            y_val = self._check_labels(validation[1], x_val.shape[0], "validation[1]")
            data = (x, y, x_val, y_val)
        settings = {"batch_size": batch_size, "lr": float(lr), "num_samples": num_samples,
                    "gaussian": self.gaussian}  # fmt: skip
        saved = None
        if resume:
            if path is None or not os.path.isfile(path):
                raise ValueError("'resume=True' needs an existing 'checkpoint' file")
            saved = load_checkpoint(path, CHECKPOINT_FORMAT)
            check_fingerprint(saved["fingerprint"], data_fingerprint(data, {}), path)
            for key, value in settings.items():
                if saved["settings"].get(key) != value:
                    raise ValueError(f"'{key}' is {value!r} but the checkpoint {path!r} was written with "
                                     f"{saved['settings'].get(key)!r}")  # fmt: skip
        if seed is not None:
            torch.manual_seed(seed)
        if self.inducing_points is None:
            self.initialize(x, y, seed=0 if seed is None else seed)
        optim = torch.optim.Adam([p for p in self.parameters() if p.requires_grad], lr=lr)
        sched = torch.optim.lr_scheduler.ReduceLROnPlateau(optim, factor=0.5, patience=5)
        n = x.shape[0]
        losses: list[float] = []
        best, best_state = math.inf, None
        if saved is not None:
            self.load_state_dict(saved["model"])
            optim.load_state_dict(saved["optimizer"])
            sched.load_state_dict(saved["scheduler"])
            losses = [float(v) for v in saved["losses"]]
            best, best_state = float(saved["best"]), saved["best_state"]
            _set_rng_state(saved["rng_state"], x.device)
        stream: tuple[Tensor, Tensor | None] | None = None  # the random state at the start of this epoch

        def save() -> None:
            if path is not None:
                save_checkpoint(path, {
                    "format": CHECKPOINT_FORMAT, "settings": settings, "model": self.state_dict(),
                    "optimizer": optim.state_dict(), "scheduler": sched.state_dict(), "losses": losses,
                    "best": best, "best_state": best_state,
                    "rng_state": stream if stream is not None else _rng_state(x.device),
                    "fingerprint": data_fingerprint(data, {}),
                })  # fmt: skip

        def stopped() -> bool:
            return optim.param_groups[0]["lr"] < 1e-4

        def advance(phase: Phase, bar: tqdm) -> bool:
            nonlocal best, best_state, stream
            if stopped():  # a resumed fit that had already stopped
                return False
            stream, done = _rng_state(x.device), len(losses)
            before = (copy.deepcopy(self.state_dict()), copy.deepcopy(optim.state_dict()),
                      copy.deepcopy(sched.state_dict()), best, best_state)  # fmt: skip
            try:
                total = 0.0
                for idx in torch.randperm(n, device=x.device).split(batch_size):
                    optim.zero_grad()
                    loss = -self.elbo(x[idx], y[idx], num_samples, num_data=n) / n
                    loss.backward()
                    optim.step()
                    total += float(loss.detach()) * len(idx) / n
                sched.step(total)
                if validation is not None:
                    nll = float(-self.predict(x_val, num_samples=100).log_prob(y_val).mean())
                    if nll < best:
                        best, best_state = nll, copy.deepcopy(self.state_dict())
                losses.append(total)
            except KeyboardInterrupt:  # mid-epoch: undo it, so the state is that of the completed epochs
                self.load_state_dict(before[0])
                optim.load_state_dict(before[1])
                sched.load_state_dict(before[2])
                best, best_state = before[3], before[4]
                del losses[done:]
                raise
            stream = None  # the epoch is complete: a save now records the state after it
            bar.update(1)
            bar.set_postfix(loss=f"{total:.4g}", refresh=False)
            if len(losses) % checkpoint_every == 0:
                save()
            return not stopped()

        phases = [Phase("fit", 0, num_epochs, "fit")]
        try:
            run_phases(phases, lambda: len(losses), advance, lambda phase, seconds: None, progress,
                       dynamic_ncols=True)  # fmt: skip
        except KeyboardInterrupt:
            save()  # the unfinished epoch is redone on resume, from the same random state
            if stream is not None:
                _set_rng_state(stream, x.device)
            warn_user(f"classifier fit interrupted after {len(losses)} epochs; keeping the fit so far"
                      + (f" (checkpoint: {path})" if path else ""), RuntimeWarning)  # fmt: skip
        else:
            save()
        if best_state is not None:
            self.load_state_dict(best_state)
        return losses

    # ---------------------------------------------------------------- Pyro model and guide
    def forward(self, x: Tensor, y: Tensor | None = None, num_data: int | None = None) -> Tensor:
        """Pyro model: sites ``"scale"`` (σ², not for the SVGP), ``"inducing"`` (v, (C, M)) and ``"y"``.

        f(x) | v, σ² is drawn from its Gaussian conditional without a site (its density cancels against
        the guide's, as in ``pyro.contrib.gp``); the likelihood of a minibatch is scaled by num_data / B.
        With :meth:`guide`, Pyro's ``SVI`` (``Trace_ELBO``) estimates the same ELBO as :meth:`elbo`.
        """
        claim_param_store(self)
        x = check_x(x, dim=self._require_initialized().shape[1])
        zero = torch.zeros((), dtype=x.dtype, device=x.device)
        if self.gaussian:
            scale = zero + 1.0
        else:
            scale = pyro.sample("scale", dist.InverseGamma(zero + self.concentration, zero + self.rate))
        m = self._require_initialized().shape[0]
        shape = (self.num_classes, m)
        v = pyro.sample("inducing", dist.Normal(torch.zeros(shape, dtype=x.dtype, device=x.device),
                                                scale.sqrt()).to_event(2))  # fmt: skip
        proj, kxx = self._project(x)
        cond = (kxx - (proj * proj).sum(0)).clamp(min=0.0)
        eps = torch.randn(x.shape[0], self.num_classes, dtype=x.dtype, device=x.device)
        f = (v @ proj).mT + (scale * cond).sqrt()[:, None] * eps
        if y is not None:
            y = self._check_labels(y, x.shape[0])
        n = x.shape[0] if num_data is None else num_data
        with pyro.plate("data", x.shape[0]), pyro.poutine.scale(scale=n / x.shape[0]):
            return pyro.sample("y", dist.Categorical(logits=f), obs=y)

    @pyro_method
    def guide(self, x: Tensor, y: Tensor | None = None, num_data: int | None = None) -> None:
        """Pyro guide: q(σ²) = InverseGamma(α, β), q(v_c | σ²) = N(m_c, σ² L_c L_cᵀ)."""
        claim_param_store(self)
        like = check_x(x)
        if self.gaussian:
            scale = torch.ones((), dtype=like.dtype, device=like.device)
        else:
            alpha, beta = self.scale_posterior(like)
            scale = pyro.sample("scale", dist.InverseGamma(alpha, beta))
        tril = scale.sqrt() * self.scale_tril(like)
        q_v = dist.MultivariateNormal(self.q_loc.to(like.dtype), scale_tril=tril)
        pyro.sample("inducing", q_v.to_event(1))
