"""The base class of the process models: hyperparameters, ``fit`` and prior function draws."""

from __future__ import annotations

import copy
import math
import sys
from abc import abstractmethod
from typing import Any

import pyro
import torch
from pyro.nn import PyroModule, PyroSample
from pyro.params.param_store import param_with_module_name
from torch import Tensor
from torch.distributions import Distribution
from torch.nn import functional as F

from bayesact.models.processes._core import (
    Factor,
    check_kernel,
    check_positive,
    check_x,
    check_xy,
    cholesky,
    factorise,
    kernel_matrix,
)

__all__ = ["Hyperparameter", "ProcessModel", "claim_param_store"]

LOG2 = math.log(2.0)


def claim_param_store(module: PyroModule) -> None:
    """Make Pyro's parameter store hold ``module``'s own parameters under the names Pyro gives them.

    A ``PyroModule`` registers its ``nn.Parameter`` s (``raw_noise``) and a plain child module's (the
    GPyTorch kernel's, as ``kernel$$$raw_lengthscale``) with ``pyro.param``, which keeps an entry already in
    the store: with a store left over from another model (or a loaded one) under the same names, ``SVI``
    would optimise those stale tensors while the model computes with its own, which never move. Entries
    that are not this module's tensors are dropped, so the module's parameters are registered (the module
    is the source of truth; restore values with ``load_state_dict``). Call at the start of ``forward``.
    """
    if not module._pyro_context.active or pyro.settings.get("module_local_params"):
        return
    store = pyro.get_param_store()
    named: list[tuple[str, Tensor]] = [
        (module._pyro_get_fullname(name), p) for name, p in module.named_parameters(recurse=False)
    ]
    for child_name, child in module.named_children():
        if not isinstance(child, PyroModule):
            prefix = module._pyro_get_fullname(child_name)
            named += [(param_with_module_name(prefix, n), p) for n, p in child.named_parameters()]
    for fullname, param in named:
        if param.requires_grad and fullname in store and store._params[fullname] is not param:
            del store[fullname]


class Hyperparameter:
    """A learnable scalar hyperparameter stored as a raw ``nn.Parameter`` ``raw_<name>`` (initially 0).

    Positive ones are ``init · softplus(raw) / log 2`` and real ones ``init + raw``, both exactly ``init``
    at the start in float32 and float64, so optimisation cannot leave the domain. Assigning a
    ``PyroSample`` to the attribute turns it into a latent site with that prior (for MCMC/SVI).
    """

    def __init__(self, positive: bool = True) -> None:
        self.positive = positive
        self.name = ""

    def __set_name__(self, owner: type, name: str) -> None:
        self.name = name

    def value(self, obj: ProcessModel, like: Tensor | None = None) -> Tensor:
        samples = obj.__dict__.get("_pyro_samples", {})
        if self.name in samples:  # a PyroSample prior replaced the parameter
            out = torch.as_tensor(PyroModule.__getattr__(obj, self.name))
        else:
            raw = getattr(obj, f"raw_{self.name}")
            if like is not None:
                raw = raw.to(dtype=like.dtype, device=like.device)
            init = obj._initial[self.name]
            out = init * (F.softplus(raw) / LOG2) if self.positive else init + raw
        return out if like is None else out.to(dtype=like.dtype, device=like.device)

    def __get__(self, obj: ProcessModel | None, owner: type | None = None) -> Any:
        return self if obj is None else self.value(obj)

    def __set__(self, obj: ProcessModel, value: float | PyroSample) -> None:
        if isinstance(value, PyroSample):  # normally intercepted by PyroModule.__setattr__
            PyroModule.__setattr__(obj, self.name, value)
            return
        if self.positive:
            check_positive(self.name, value)
        raw = getattr(obj, f"raw_{self.name}")
        init = obj._initial[self.name]
        target = torch.tensor(float(value) / init * LOG2 if self.positive else float(value) - init,
                              dtype=torch.float64)
        with torch.no_grad():
            raw.copy_(target + torch.log(-torch.expm1(-target)) if self.positive else target)

    def register(self, obj: ProcessModel, init: float) -> None:
        """Create ``raw_<name>`` on ``obj`` with the initial value ``init`` (checked)."""
        if self.positive:
            init = check_positive(self.name, init)
        elif isinstance(init, bool) or not isinstance(init, int | float) or not math.isfinite(init):
            raise ValueError(f"'{self.name}' must be a finite number, got {init!r}")
        obj._initial[self.name] = float(init)
        obj.register_parameter(f"raw_{self.name}", torch.nn.Parameter(torch.zeros(())))


class ProcessModel(PyroModule):
    """Regression y = f(x) + noise with f a (scale mixture of) Gaussian process(es) on ``kernel``.

    Hyperparameters: the kernel's own, ``noise`` (ε in K_y = K + εI) and the constant ``mean``; all are
    learnable (``fit``) and each may be replaced by a ``PyroSample`` prior for MCMC.
    """

    noise = Hyperparameter(positive=True)
    mean = Hyperparameter(positive=False)

    def __init__(self, kernel: object, noise: float = 1e-2, mean: float = 0.0) -> None:
        super().__init__()
        self.kernel = check_kernel(kernel)
        self._initial: dict[str, float] = {}
        type(self).noise.register(self, noise)
        type(self).mean.register(self, mean)

    # ---------------------------------------------------------------- helpers
    def get_extra_state(self) -> dict[str, dict[str, float]]:
        """The initial values the raw hyperparameters are relative to (saved in ``state_dict``)."""
        return {"initial": dict(self._initial)}

    def set_extra_state(self, state: dict[str, dict[str, float]]) -> None:
        self._initial.update(state["initial"])

    def _value(self, name: str, like: Tensor) -> Tensor:
        """Hyperparameter ``name`` computed in ``like``'s dtype and device."""
        hyper = getattr(type(self), name)
        assert isinstance(hyper, Hyperparameter)
        return hyper.value(self, like)

    def _factor(self, x: Tensor, y: Tensor) -> Factor:
        return factorise(self.kernel, x, y, self._value("noise", x), self._value("mean", x))

    def _prior_chol(self, x: Tensor) -> Tensor:
        """Cholesky factor of K_y = K(x, x) + noise·I (the covariance of y given σ² = 1)."""
        # out of place: under the sampler's vmap the noise may be batched while K is not
        k_y = kernel_matrix(self.kernel, x)
        k_y = k_y + self._value("noise", x) * torch.eye(x.shape[0], dtype=x.dtype, device=x.device)
        return cholesky(k_y, "the kernel matrix K(x, x) + noise*I")

    def _gaussian_predictive(
        self, x_new: Tensor, x: Tensor, y: Tensor, full_cov: bool, include_noise: bool
    ) -> tuple[Factor, Tensor, Tensor]:
        """The part every predictive shares, given σ² = 1: the factor of K_y, the mean m + K_{*n}α at
        ``x_new`` and the covariance S (full, or its diagonal), plus noise·I (resp. noise) when
        ``include_noise``."""
        x, y = check_xy(x, y)
        x_new = check_x(x_new, "x_new", dim=x.shape[1])
        factor = self._factor(x, y)
        mean, cov = factor.predictive(self.kernel, x, x_new, full_cov)
        mean = mean + self._value("mean", x)
        if include_noise:
            noise = self._value("noise", x)
            if full_cov:
                noise = noise * torch.eye(x_new.shape[0], dtype=x.dtype, device=x.device)
            cov = cov + noise
        return factor, mean, cov

    @abstractmethod
    def _prior_scales(self, n: int, like: Tensor) -> Tensor | None:
        """``n`` prior draws of σ² (None: σ² = 1, a GP)."""

    @abstractmethod
    def log_marginal(self, x: Tensor, y: Tensor) -> Tensor:
        """log p(y | x) with f and σ² integrated out."""

    @abstractmethod
    def predict(
        self, x_new: Tensor, x: Tensor, y: Tensor, full_cov: bool = False, include_noise: bool = True
    ) -> Distribution:
        """Posterior predictive of f(x_new) (``include_noise=False``) or y(x_new) given data (x, y)."""

    # ---------------------------------------------------------------- prior draws
    def sample_functions(self, x: Tensor, n: int) -> Tensor:
        """``n`` prior draws of f at the rows of ``x`` (N, d) without observation noise: (n, N, 1)."""
        x = check_x(x)
        if isinstance(n, bool) or not isinstance(n, int) or n < 1:
            raise ValueError(f"'n' must be an int >= 1, got {n!r}")
        with torch.no_grad():
            chol = cholesky(kernel_matrix(self.kernel, x), "the kernel matrix K(x, x)")
            z = torch.randn(n, x.shape[0], dtype=x.dtype, device=x.device)
            f = z @ chol.mT
            scales = self._prior_scales(n, x)
            if scales is not None:
                f = f * scales.sqrt().unsqueeze(-1)
            return (f + self._value("mean", x)).unsqueeze(-1)

    # ---------------------------------------------------------------- type-II ML
    def fit(
        self,
        x: Tensor,
        y: Tensor,
        num_steps: int = 1000,
        lr: float = 1e-2,
        validation: tuple[Tensor, Tensor] | None = None,
        progress: bool = True,
    ) -> list[float]:
        """Type-II maximum likelihood of all learnable hyperparameters; returns the loss per step.

        Minimises −log p(y|x)/N with Adam and ``ReduceLROnPlateau`` (factor 0.5, patience 5), stopping
        once the learning rate falls below 1e-4 or after ``num_steps``. With ``validation=(x_val, y_val)``
        the hyperparameters with the lowest validation NLL (mean −log predictive density) are kept;
        otherwise the last ones.
        """
        x, y = check_xy(x, y)
        if isinstance(num_steps, bool) or not isinstance(num_steps, int) or num_steps < 1:
            raise ValueError(f"'num_steps' must be an int >= 1, got {num_steps!r}")
        check_positive("lr", lr)
        if validation is not None:
            if not isinstance(validation, tuple | list) or len(validation) != 2:
                raise TypeError("'validation' must be a tuple (x_val, y_val)")
            x_val, y_val = check_xy(*validation, names=("validation[0]", "validation[1]"))
            check_x(x_val, "validation[0]", dim=x.shape[1])
        params = [p for p in self.parameters() if p.requires_grad]
        if not params:
            raise ValueError("the model has no learnable hyperparameters to fit")
        optim = torch.optim.Adam(params, lr=lr)
        sched = torch.optim.lr_scheduler.ReduceLROnPlateau(optim, factor=0.5, patience=5)
        losses: list[float] = []
        best, best_state = math.inf, None
        bar = None
        if progress and sys.stderr.isatty():
            from tqdm.auto import tqdm

            bar = tqdm(total=num_steps, desc="fit")
        for _ in range(num_steps):
            optim.zero_grad()
            loss = -self.log_marginal(x, y) / x.shape[0]
            loss.backward()
            optim.step()
            losses.append(float(loss.detach()))
            sched.step(losses[-1])
            if validation is not None:
                with torch.no_grad():
                    nll = float(-self.predict(x_val, x, y).log_prob(y_val).mean())
                if nll < best:
                    best, best_state = nll, copy.deepcopy(self.state_dict())
            if bar is not None:
                bar.update(1)
                bar.set_postfix(loss=losses[-1])
            if optim.param_groups[0]["lr"] < 1e-4:
                break
        if bar is not None:
            bar.close()
        if best_state is not None:
            self.load_state_dict(best_state)
        return losses

    # ---------------------------------------------------------------- Pyro model
    @abstractmethod
    def _observation(self, chol: Tensor, loc: Tensor) -> Distribution:
        """The distribution of y given x with f (and, for closed forms, σ²) integrated out."""

    def forward(self, x: Tensor, y: Tensor | None = None) -> Tensor:
        """Pyro model: observe ``y`` (N,) at ``x`` (N, d) under the collapsed marginal (site ``"y"``)."""
        claim_param_store(self)
        if y is None:
            x = check_x(x)
        else:
            x, y = check_xy(x, y)
        chol = self._prior_chol(x)
        loc = self._value("mean", x).expand(x.shape[0])
        return pyro.sample("y", self._observation(chol, loc), obs=y)  # type: ignore[arg-type]
