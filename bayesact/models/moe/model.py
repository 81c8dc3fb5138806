"""The Gaussian mixture of experts as a Pyro model, with the expert index marginalised (or enumerated)."""

from __future__ import annotations

import inspect
import math
from collections.abc import Callable, Iterator, Mapping
from contextlib import contextmanager
from dataclasses import dataclass
from typing import Any

import pyro
import pyro.distributions as dist
import torch
from pyro.distributions.transforms import biject_to
from pyro.nn import PyroModule
from torch import Tensor, nn
from torch.func import functional_call

from bayesact.infer import is_concrete
from bayesact.priors._checks import check_int

from ..likelihoods import Gaussian, Likelihood, MixtureLikelihood
from ._fit import fit_moe
from ._gating import build_gate, per_expert_gate_params
from ._parts import LinearExperts, MoEFit, NoiseStd
from .gates import DSelectKGate

__all__ = ["GaussianMoE", "LinearExperts", "MoEFit"]

#: prior groups of ``GaussianMoE(priors=...)`` and their defaults (scalar distributions, expanded per site)
PRIOR_GROUPS = ("gate", "expert", "noise_std")


def _default_prior(group: str, dtype: torch.dtype, device: torch.device) -> dist.TorchDistribution:
    one = torch.ones((), dtype=dtype, device=device)
    if group == "gate":
        return dist.Normal(0 * one, 5 * one)
    if group == "expert":
        return dist.Normal(0 * one, 10 * one)
    return dist.HalfNormal(5 * one)


def _cast_distribution(prior: dist.TorchDistribution, dtype: torch.dtype, device: torch.device) -> Any:
    """``prior`` rebuilt with its tensor parameters in ``dtype`` on ``device`` (unchanged if it already
    is)."""
    params = {k: getattr(prior, k) for k in prior.arg_constraints if hasattr(prior, k)}
    tensors = {k: v for k, v in params.items() if isinstance(v, Tensor)}
    if all(v.dtype == dtype and v.device == device for v in tensors.values()):
        return prior
    accepted = inspect.signature(type(prior)).parameters
    rebuilt = {
        k: (v.to(dtype=dtype, device=device) if isinstance(v, Tensor) else v)
        for k, v in params.items()
        if k in accepted
    }
    factory: Any = type(prior)
    return factory(**rebuilt)


class _ExpertNormal(Likelihood):
    """y | f_k ~ N(f_k, σ_k²) for components stacked on dim 0 of f (K, N, 1), σ of shape (K,)."""

    name = "gaussian"

    def __init__(self, scale: Tensor):
        self.scale = scale

    def validate(self, y: Tensor | None, *, num_rows: int, out_dim: int, dtype: torch.dtype) -> Tensor | None:
        return Gaussian().validate(y, num_rows=num_rows, out_dim=out_dim, dtype=dtype)

    def distribution(self, f: Tensor) -> dist.TorchDistribution:
        return dist.Normal(f, self.scale[:, None, None]).to_event(1)


class _GatePenalty(nn.Module):
    """Calls ``gate.regularization`` under ``functional_call`` (which only calls ``forward``)."""

    def __init__(self, gate: nn.Module):
        super().__init__()
        self.gate = gate

    def forward(self, x: Tensor) -> Tensor:
        return self.gate.regularization(x)  # type: ignore[operator]


@dataclass(frozen=True)
class _Site:
    """A latent site: ``name`` (``group.param`` or ``noise_std``), the module and parameter it stands for."""

    name: str
    group: str
    module: str
    param: str
    shape: torch.Size
    pinned: bool

    @property
    def free_shape(self) -> torch.Size:
        """The site's shape: the parameter's (K - 1 rows for a pinned gate parameter)."""
        return self.shape


class GaussianMoE(PyroModule):
    """Gaussian mixture of experts: p(y | x) = Σ_k π_k(x) N(y; m_k(x), σ_k²) (Jacobs et al., 1991).

    π(x) is the gate: a name in :data:`~bayesact.models.moe.GATE_NAMES` (the gates of
    :mod:`bayesact.models.moe.gates`) or a module mapping x (N, d) to the simplex (N, K). m_k(x) are the
    expert means: ``"linear"`` (a_kᵀx + b_k) or a module mapping x (N, d) to (N, K).

    As a Pyro model, ``moe(x, y)`` has the latent sites ``gate.<param>`` and ``expert.<param>`` (one per
    parameter of the gate and expert modules) and ``noise_std`` (K,). The expert index is marginalised,
    log p(y|x) = logsumexp_k[log π_k(x) + log N(y; m_k(x), σ_k²)], through
    :class:`~bayesact.models.likelihoods.MixtureLikelihood` (exact zeros in π are safe). There is no
    discrete site, so NUTS applies to smooth gates. With ``enumerate=True`` the model samples
    z ~ Categorical(π(x)) per row instead, marked for parallel enumeration (``TraceEnum_ELBO``, or Pyro's
    NUTS with ``max_plate_nesting=1``).

    Pinning: a named gate that is translation invariant (softmax, temperature, top-K, sparsemax, the
    identity activation gate) is built with ``pinned=True``: the last expert's (β_K, β_0K) are fixed at 0
    and the sites ``gate.weight``/``gate.bias`` hold the other K - 1 rows. StableMax, DSelect-k and
    non-identity activation gates have no such symmetry and are not pinned. π is renormalised to sum to 1
    (DSelect-k leaks mass to unreachable codes when K is not a power of 2); a row where the gate puts no
    mass on any expert raises a ValueError (the renormalised gate is undefined there).

    Args:
        in_dim: input features d.
        num_experts: K >= 2.
        gate: a name in :data:`~bayesact.models.moe.GATE_NAMES` or an ``nn.Module``.
        gate_kwargs: keyword arguments of a named gate.
        expert: ``"linear"`` or an ``nn.Module`` mapping (N, d) to (N, K).
        priors: prior per site name, or per group ``"gate"``, ``"expert"``, ``"noise_std"`` (a scalar
            distribution, expanded to the site's shape; its support sets the site's constraint). Defaults:
            gate N(0, 5²), expert N(0, 10²), noise_std HalfNormal(5).
        pin_gate: pin the last expert's gate parameters (default: when the gate is translation invariant).
        enumerate: the enumerated variant (a discrete site ``z``) instead of the marginalised one.
    """

    def __init__(
        self,
        in_dim: int,
        num_experts: int,
        gate: str | nn.Module = "softmax",
        gate_kwargs: Mapping[str, Any] | None = None,
        expert: str | nn.Module = "linear",
        priors: Mapping[str, dist.TorchDistribution] | None = None,
        pin_gate: bool | None = None,
        enumerate: bool = False,
    ):
        super().__init__()
        check_int(in_dim, "in_dim")
        if isinstance(num_experts, bool) or not isinstance(num_experts, int) or num_experts < 2:
            raise ValueError(f"'num_experts' must be an int >= 2, got {num_experts!r}")
        self.in_dim = in_dim
        self.num_experts = num_experts
        self.gate_name = gate if isinstance(gate, str) else type(gate).__name__
        self.gate = build_gate(gate, in_dim, num_experts, gate_kwargs, pin_gate)
        if isinstance(expert, nn.Module):
            self.expert = expert
        elif expert == "linear":
            self.expert = LinearExperts(in_dim, num_experts)
        else:
            raise ValueError(f"'expert' must be 'linear' or an nn.Module, got {expert!r}")
        self.noise = NoiseStd(num_experts)
        self.pin_gate = bool(getattr(self.gate, "pinned", False))
        if not isinstance(enumerate, bool):
            raise ValueError(f"'enumerate' must be a bool, got {enumerate!r}")
        self.enumerate = enumerate
        self._sites = self._make_sites()
        self.priors = self._check_priors(priors)
        self._interventions: list[Callable[[Tensor], Tensor]] = []
        self._check_gate_output()

    # ------------------------------------------------------------------ structure
    def _make_sites(self) -> tuple[_Site, ...]:
        sites = []
        per_expert = per_expert_gate_params(self._modules["gate"])  # type: ignore[arg-type]
        for group, module in (("gate", "gate"), ("expert", "expert")):
            for pname, p in self._modules[module].named_parameters():  # type: ignore[union-attr]
                pinned = group == "gate" and self.pin_gate and pname in per_expert
                sites.append(_Site(f"{group}.{pname}", group, module, pname, p.shape, pinned))
        sites.append(
            _Site("noise_std", "noise_std", "noise", "value", torch.Size((self.num_experts,)), False)
        )
        return tuple(sites)

    @property
    def site_names(self) -> tuple[str, ...]:
        """The latent sites of the marginalised model, in sampling order."""
        return tuple(s.name for s in self._sites)

    def pinned_sites(self) -> tuple[str, ...]:
        """The gate sites whose last expert row is pinned to 0 (they hold K - 1 rows)."""
        return tuple(s.name for s in self._sites if s.pinned)

    def _check_priors(self, priors: Mapping[str, Any] | None) -> dict[str, dist.TorchDistribution]:
        if priors is None:
            return {}
        if not isinstance(priors, Mapping):
            raise ValueError(
                f"'priors' must be a mapping of site or group names to distributions, got {priors!r}"
            )
        allowed = set(PRIOR_GROUPS) | set(self.site_names)
        for key, value in priors.items():
            if key not in allowed:
                raise ValueError(f"'priors' has unknown key {key!r}; expected one of {sorted(allowed)}")
            if (
                not isinstance(value, torch.distributions.Distribution)
                or value.batch_shape
                or value.event_shape
            ):
                raise ValueError(f"'priors[{key!r}]' must be a scalar torch distribution, got {value!r}")
        return dict(priors)

    def _check_gate_output(self) -> None:
        probe = next(self._modules["gate"].parameters(), None)  # type: ignore[union-attr]
        dtype = probe.dtype if probe is not None else torch.get_default_dtype()
        with torch.no_grad():
            out = self._modules["gate"](torch.zeros(2, self.in_dim, dtype=dtype))  # type: ignore[misc]
            means = self._modules["expert"](torch.zeros(2, self.in_dim, dtype=dtype))  # type: ignore[misc]
        if not isinstance(out, Tensor) or out.shape != (2, self.num_experts):
            raise ValueError(
                f"'gate' must map (N, {self.in_dim}) to (N, {self.num_experts}), got output "
                f"{tuple(out.shape) if isinstance(out, Tensor) else type(out).__name__}"
            )
        if not isinstance(means, Tensor) or means.shape != (2, self.num_experts):
            raise ValueError(f"'expert' must map (N, {self.in_dim}) to (N, {self.num_experts})")

    def prior(self, site: str, dtype: torch.dtype | None = None, device: torch.device | None = None) -> Any:
        """The prior of ``site`` expanded to its (free) shape, as a distribution with matching event dims."""
        spec = next((s for s in self._sites if s.name == site), None)
        if spec is None:
            raise ValueError(f"'site' must be one of {self.site_names}, got {site!r}")
        dtype = dtype or torch.get_default_dtype()
        device = device or torch.device("cpu")
        base = self.priors.get(spec.name, self.priors.get(spec.group))
        base = (
            _default_prior(spec.group, dtype, device)
            if base is None
            else _cast_distribution(base, dtype, device)
        )
        return base.expand(spec.free_shape).to_event(len(spec.free_shape))

    # ------------------------------------------------------------------ evaluation
    def _components(self, x: Tensor, values: Mapping[str, Tensor]) -> tuple[Tensor, Tensor, Tensor]:
        """(π (N, K), expert means (N, K), σ (K,)) at the free site ``values``, interventions applied."""
        params: dict[str, dict[str, Tensor]] = {"gate": {}, "expert": {}}
        for spec in self._sites[:-1]:
            params[spec.module][spec.param] = values[spec.name]
        weights = functional_call(self._modules["gate"], params["gate"], (x,))  # type: ignore[arg-type]
        weights = self._renormalise(weights)
        for intervention in self._interventions:
            weights = intervention(weights)
        means = functional_call(self._modules["expert"], params["expert"], (x,))  # type: ignore[arg-type]
        return weights, means, values["noise_std"]

    def components(
        self, x: Tensor, values: Mapping[str, Tensor] | None = None
    ) -> tuple[Tensor, Tensor, Tensor]:
        """The mixture's parts at x (N, d): (π(x) (N, K), the expert means m_k(x) (N, K), σ (K,)), so that
        p(y | x) = Σ_k π_k(x) N(y; m_k(x), σ_k²).

        π is the gate's output renormalised to sum to 1 with active interventions (:func:`mask_experts`,
        :func:`force_experts`) applied, exactly what :meth:`log_likelihood`, :meth:`predict` and
        :meth:`responsibilities` use. ``values``: free site values (default: the point estimate); the
        result is differentiable in them.
        """
        x, _ = self._check_data(x, None)
        return self._components(x, self.point_values() if values is None else values)

    def gate_regularization(self, x: Tensor, values: Mapping[str, Tensor] | None = None) -> Tensor:
        """The gate's own penalty ``gate.regularization(x)`` at the free site ``values`` (default: the point
        estimate); 0 for a gate without one (DSelect-k: the unreachable-code penalty plus its entropy
        term)."""
        gate = self._modules["gate"]
        if not callable(getattr(gate, "regularization", None)):
            return x.new_zeros(())
        vals = self.point_values() if values is None else values
        params = {f"gate.{s.param}": vals[s.name] for s in self._sites if s.group == "gate"}
        out = functional_call(_GatePenalty(gate), params, (x,))  # type: ignore[arg-type]
        assert isinstance(out, Tensor)
        return out

    @staticmethod
    def _renormalise(weights: Tensor) -> Tensor:
        """π / Σ_k π_k (DSelect-k may leak mass to unreachable codes). A row with Σ_k π_k = 0 (every selector
        on an unreachable code) has no renormalised gate: a ValueError naming it (``fit`` counts that restart,
        or line-search trial, as failed), never a silent 0/0 = NaN. Under tracing (values not concrete) such
        a row stays all-zero instead."""
        total = weights.sum(-1, keepdim=True)
        empty = total == 0
        if is_concrete(weights) and bool(empty.any()):
            raise ValueError(
                f"the gate puts no mass on any expert for {int(empty.sum())} of {empty.numel()} rows (e.g. "
                "every DSelect-k selector on an unreachable code), so pi / sum(pi) is undefined"
            )
        return weights / torch.where(empty, torch.ones_like(total), total)

    def point_values(self) -> dict[str, Tensor]:
        """The point estimate (set by :meth:`fit`) as free site values, detached."""
        out = {}
        for spec in self._sites:
            p = self._modules[spec.module].get_parameter(spec.param).detach()  # type: ignore[union-attr]
            out[spec.name] = p
        return out

    def set_point_values(self, values: Mapping[str, Tensor]) -> None:
        """Write free site ``values`` into the gate, expert and noise modules (pinned rows set to 0)."""
        with torch.no_grad():
            for spec in self._sites:
                p = self._modules[spec.module].get_parameter(spec.param)  # type: ignore[union-attr]
                v = torch.as_tensor(values[spec.name], dtype=p.dtype, device=p.device)
                if v.shape != spec.free_shape:
                    raise ValueError(
                        f"'values[{spec.name!r}]' must have shape {tuple(spec.free_shape)}, "
                        f"got {tuple(v.shape)}"
                    )
                p.copy_(v)

    def _check_data(self, x: Any, y: Any) -> tuple[Tensor, Tensor | None]:
        if not isinstance(x, Tensor) or not x.is_floating_point():
            raise TypeError(f"'x' must be a floating-point tensor of shape (N, {self.in_dim})")
        if x.dim() != 2 or x.shape[-1] != self.in_dim:
            raise ValueError(f"'x' must have shape (N, {self.in_dim}), got {tuple(x.shape)}")
        if is_concrete(x) and not bool(x.isfinite().all()):
            raise ValueError("'x' contains NaN or inf")
        y = Gaussian().validate(y, num_rows=x.shape[0], out_dim=1, dtype=x.dtype)
        return x, y

    # ------------------------------------------------------------------ Pyro model
    def forward(self, x: Tensor, y: Tensor | None = None, total_size: int | None = None) -> Tensor:
        """The Pyro model: latent gate/expert/noise sites, then ``obs`` (N, 1) observed at ``y`` (N,) or
        (N, 1).

        Returns the mixture mean Σ_k π_k(x) m_k(x), shape (N,).
        """
        x, y = self._check_data(x, y)
        values = {s.name: pyro.sample(s.name, self.prior(s.name, x.dtype, x.device)) for s in self._sites}
        weights, means, scale = self._components(x, values)
        if self.enumerate:
            n = x.shape[0]
            size = n if total_size is None else total_size
            with pyro.plate("data", size=size, subsample=torch.arange(n, device=x.device)):
                z = pyro.sample("z", dist.Categorical(probs=weights), infer={"enumerate": "parallel"})
                one_hot = nn.functional.one_hot(z, self.num_experts).to(x.dtype)
                loc, sd = (one_hot * means).sum(-1), (one_hot * scale).sum(-1)
                pyro.sample("obs", dist.Normal(loc, sd), obs=None if y is None else y[:, 0])
        else:
            mixture = MixtureLikelihood(_ExpertNormal(scale))
            mixture.sample(
                "obs", means.transpose(0, 1).unsqueeze(-1), y, weights=weights, total_size=total_size
            )
        return (weights * means).sum(-1)

    # ------------------------------------------------------------------ point estimates
    def log_likelihood(self, x: Tensor, y: Tensor, values: Mapping[str, Tensor] | None = None) -> Tensor:
        """log p(y_i | x_i) per row (N,) at free site ``values`` (default: the point estimate)."""
        x, yv = self._check_data(x, y)
        assert yv is not None
        vals = self.point_values() if values is None else values
        weights, means, scale = self._components(x, vals)
        return MixtureLikelihood(_ExpertNormal(scale)).log_prob(
            means.transpose(0, 1).unsqueeze(-1), yv, weights
        )

    def predict(self, x: Tensor) -> dist.MixtureSameFamily:
        """p(y | x) at the point estimate: ``MixtureSameFamily`` of the gate and the experts, batch shape
        (N,)."""
        x, _ = self._check_data(x, None)
        with torch.no_grad():
            weights, means, scale = self._components(x, self.point_values())
        return dist.MixtureSameFamily(
            dist.Categorical(probs=weights), dist.Normal(means, scale.expand_as(means))
        )

    def responsibilities(self, x: Tensor, y: Tensor, values: Mapping[str, Tensor] | None = None) -> Tensor:
        """p(z = k | x, y) (N, K): π_k N(y; m_k, σ_k²) normalised; exactly 0 where π_k = 0."""
        x, yv = self._check_data(x, y)
        assert yv is not None
        vals = self.point_values() if values is None else values
        weights, means, scale = self._components(x, vals)
        log_p = dist.Normal(means, scale).log_prob(yv)
        shift = (
            torch.where(weights > 0, log_p, torch.full_like(log_p, -math.inf)).amax(-1, keepdim=True).detach()
        )
        shift = torch.where(torch.isfinite(shift), shift, torch.zeros_like(shift))
        unnorm = weights * torch.exp((log_p - shift).clamp(max=80.0))
        return unnorm / unnorm.sum(-1, keepdim=True)

    @contextmanager
    def intervened(self, intervention: Callable[[Tensor], Tensor]) -> Iterator[None]:
        """Apply ``intervention`` (π (N, K) -> π') to the gate inside the block (see :func:`mask_experts`)."""
        self._interventions.append(intervention)
        try:
            yield
        finally:
            self._interventions.remove(intervention)

    # ------------------------------------------------------------------ fitting
    def fit(
        self,
        x: Tensor,
        y: Tensor,
        *,
        num_restarts: int = 5,
        method: str = "mle",
        max_iter: int = 500,
        tol: float = 1e-9,
        seed: int | None = None,
        init: Mapping[str, Tensor] | None = None,
        regularize: bool | None = None,
    ) -> MoEFit:
        """Maximum likelihood: argmax_θ Σ_i log p(y_i | x_i, θ), best of ``num_restarts`` starts.

        ``method="mle"`` maximises the marginal log-likelihood directly (L-BFGS with strong Wolfe line
        search, in each site's unconstrained space); ``method="em"`` runs EM (Jordan & Jacobs, 1994):
        E-step the responsibilities r_ik, M-step weighted least squares for linear experts and
        σ_k² = Σ_i r_ik (y_i - m_ik)² / Σ_i r_ik, and L-BFGS on Σ_ik r_ik log π_k(x_i) for the gate (and
        on the expected complete-data log-likelihood for a custom expert module). For a gate with exact
        zeros (``gate.sparse``: sparsemax, DSelect-k) that gate objective is -inf once an expert with
        r_ik > 0 is switched off, so the gate step maximises the observed log-likelihood with the experts
        fixed instead; a gate step is kept only if its objective did not get worse. A top-K gate has its
        own gate step (:mod:`bayesact.models.moe._topk_em`), which crosses the jumps of the top-k
        partition. Either way EM's log-likelihood never decreases. Stops when the mean log-likelihood
        changes by < ``tol``. The best estimate is written into the model (:meth:`point_values`);
        ``MoEFit.history`` has EM's mean log-likelihood after every iteration.

        ``init``: free site values (every site, as :meth:`point_values` gives them) for the first restart;
        the other restarts start at random.

        ``regularize``: ``None`` (default) means on for a DSelect-k gate (:class:`DSelectKGate`) with
        ``method="mle"`` and off otherwise (every other gate, any custom gate module, and EM: the plain
        MLE as before); ``True``/``False`` force it on/off (``True`` needs ``method="mle"``). The result
        says which was used (``MoEFit.regularized``). Regularised: penalised maximum likelihood,
        argmax_θ mean_i log p(y_i | x_i, θ) − :meth:`gate_regularization` (x), as Hazimeh et al. (2021)
        train DSelect-k; each restart first fits the experts and noise scales alone (10 L-BFGS
        iterations, the gate held at its start), then everything; the best restart is the one with the
        highest penalised objective. For DSelect-k both parts are needed: started jointly, the
        near-identical selectors move together toward the one expert that best fits the still
        undifferentiated data and saturate (S' = 0, so the gradient is exactly 0) at a one-expert fit
        (18 of 120 restarts in ``tests/models/moe/test_dselect_recovery.py``, 0 of 120 regularised); the
        warm-up alone avoids that but ends non-sparse. ``regularize=False`` gives the plain DSelect-k MLE.
        """
        check_int(num_restarts, "num_restarts")
        check_int(max_iter, "max_iter")
        if method not in ("mle", "em"):
            raise ValueError(f"'method' must be 'mle' or 'em', got {method!r}")
        if regularize is not None and not isinstance(regularize, bool):
            raise ValueError(f"'regularize' must be a bool or None (auto), got {regularize!r}")
        if regularize and method != "mle":
            raise ValueError("'regularize' is implemented for method='mle' only, got method='em'")
        if regularize is None:  # auto: the authors' penalised training for DSelect-k, the plain MLE otherwise
            regularize = method == "mle" and isinstance(self._modules["gate"], DSelectKGate)
        x, yv = self._check_data(x, y)
        if yv is None:
            raise ValueError("'y' must be a tensor of targets, got None")
        if init is not None:
            if not isinstance(init, Mapping) or set(init) != set(self.site_names):
                raise ValueError(f"'init' must be a mapping with the keys {self.site_names}, got {init!r}")
            for spec in self._sites:
                value = init[spec.name]
                if not isinstance(value, Tensor) or value.shape != spec.free_shape:
                    raise ValueError(
                        f"'init[{spec.name!r}]' must be a tensor of shape {tuple(spec.free_shape)}, got "
                        f"{tuple(value.shape) if isinstance(value, Tensor) else type(value).__name__}"
                    )
        return fit_moe(
            self,
            x,
            yv[:, 0],
            num_restarts=num_restarts,
            method=method,
            max_iter=max_iter,
            tol=tol,
            seed=seed,
            start=init,
            regularize=regularize,
        )

    def unconstrained_transform(self, site: str) -> Any:
        """The bijection from ℝ to the support of ``site``'s prior (identity for real-valued sites)."""
        return biject_to(self.prior(site).support)

    def extra_repr(self) -> str:
        return (
            f"in_dim={self.in_dim}, num_experts={self.num_experts}, gate={self.gate_name!r}, "
            f"pin_gate={self.pin_gate}, enumerate={self.enumerate}"
        )
