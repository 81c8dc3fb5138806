"""Mixture-of-experts gates: modules mapping inputs x (..., d) to points on the simplex (..., K).

Every gate has the constructor shape ``Gate(in_dim, num_experts, *, <explicit keyword options>)``
and the same interface:

- ``gate(x)``: the gate probabilities π(x), shape (..., K), on the simplex (DSelect-k: sum <= 1,
  with equality when K is a power of 2 or its unreachable-code penalty is 0);
- ``gate.log_prob(x)``: log π(x), exactly ``-inf`` where π is exactly 0, with finite gradients
  (``logsumexp(log π + log N)`` and Σ π·N are NaN-free also where some π_k = 0);
- ``gate.regularization(x)``: the gate's own penalty (0 except for DSelect-k);
- ``gate.identifiable_parameters()``: the parameter functions that the likelihood determines
  (invariant under the gate's exact symmetries: translation of the logits, the temperature scale);
- ``gate.translation_invariant``, ``gate.smoothness`` ("C-inf", "C1", "C0", "discontinuous") and
  ``gate.sparse`` (can give exact zeros).

Linear-logit gates compute z_k(x) = β_kᵀx + β_0k from ``weight`` (K, d) and ``bias`` (K,). Where the
map is translation invariant (softmax, temperature, top-K, sparsemax), ``pinned=True`` fixes the
last expert's gate parameters at 0 (``weight``/``bias`` then hold K - 1 rows; ``full_weight`` /
``full_bias`` always have K), removing the exact symmetry z -> z + c·1.

:func:`make_gate` builds a gate by name (:data:`GATES`) with an options mapping.

Papers: "Is Temperature Sample Efficient for Softmax Gaussian Mixture of Experts?" (Nguyen, Akbarian,
Ho, ICML 2024); "Statistical Perspective of Top-K Sparse Softmax Gating Mixture of Experts" (Nguyen
et al., ICLR 2024); "DSelect-k" (Hazimeh et al., NeurIPS 2021); sparsemax (Martins & Astudillo, ICML
2016); StableMax (Prieto et al., ICLR 2025).
"""

from __future__ import annotations

import inspect
import math
from collections.abc import Callable, Mapping
from typing import Any, ClassVar, cast

import torch
from torch import Tensor, nn

from bayesact.activations import Activation, get, names
from bayesact.activations.probability import sparsemax, stablemax
from bayesact.activations.registry import (
    Smoothness,
    positive_to_softplus_raw,
    softplus_to_positive,
    spec,
)

__all__ = [
    "GATES",
    "ActivationGate",
    "DSelectKGate",
    "Gate",
    "LinearGate",
    "SoftmaxGate",
    "SparsemaxGate",
    "StableMaxGate",
    "TemperatureGate",
    "TopKGate",
    "make_gate",
    "safe_log",
    "smooth_step",
]


def safe_log(p: Tensor) -> Tensor:
    """log p with log 0 = -inf exactly and a zero (not NaN) gradient at the zeros (both branches safe)."""
    positive = p > 0
    return torch.where(positive, torch.log(torch.where(positive, p, torch.ones_like(p))),
                       torch.full_like(p, -math.inf))


def _check_int(value: Any, name: str, minimum: int, cls: str) -> int:
    if isinstance(value, bool) or not isinstance(value, int):
        raise TypeError(f"{cls}: {name!r} must be an int, got {type(value).__name__}")
    if value < minimum:
        raise ValueError(f"{cls}: {name!r} must be >= {minimum}, got {value}")
    return value


def _check_positive(value: Any, name: str, cls: str) -> float:
    if isinstance(value, bool) or not isinstance(value, int | float):
        raise TypeError(f"{cls}: {name!r} must be a float, got {type(value).__name__}")
    if not (math.isfinite(value) and value > 0):
        raise ValueError(f"{cls}: {name!r} must be finite and > 0, got {value}")
    return float(value)


def _check_bool(value: Any, name: str, cls: str) -> bool:
    if not isinstance(value, bool):
        raise TypeError(f"{cls}: {name!r} must be a bool, got {type(value).__name__}")
    return value


class Gate(nn.Module):
    """Base class: x (..., in_dim) -> π(x) (..., num_experts) on the simplex."""

    smoothness: ClassVar[Smoothness] = "C-inf"
    sparse: ClassVar[bool] = False

    def __init__(self, in_dim: int, num_experts: int) -> None:
        super().__init__()
        cls = type(self).__name__
        self.in_dim = _check_int(in_dim, "in_dim", 1, cls)
        self.num_experts = _check_int(num_experts, "num_experts", 2, cls)

    @property
    def translation_invariant(self) -> bool:
        """Whether π is unchanged when a common vector is added to every expert's gate parameters."""
        return False

    def _check_x(self, x: Tensor) -> None:
        cls = type(self).__name__
        if not isinstance(x, Tensor) or not x.is_floating_point():
            raise TypeError(f"{cls}: 'x' must be a floating-point tensor")
        if x.dim() == 0 or x.shape[-1] != self.in_dim:
            raise ValueError(f"{cls}: 'x' must have shape (..., {self.in_dim}), got {tuple(x.shape)}")

    def log_prob(self, x: Tensor) -> Tensor:
        """log π(x): -inf exactly where π is 0, gradients finite everywhere."""
        return safe_log(self(x))

    def regularization(self, x: Tensor) -> Tensor:
        """The gate's penalty to add to the loss (0 unless the gate defines one)."""
        return x.new_zeros(())

    def identifiable_parameters(self) -> dict[str, Tensor]:
        """The parameter functions the model determines (default: every parameter, detached)."""
        return {k: v.detach().clone() for k, v in self.named_parameters()}


class LinearGate(Gate):
    """A gate of the linear logits z_k(x) = β_kᵀx + β_0k (``weight``, ``bias``), optionally pinned."""

    def __init__(self, in_dim: int, num_experts: int, *, pinned: bool = False) -> None:
        super().__init__(in_dim, num_experts)
        self.pinned = _check_bool(pinned, "pinned", type(self).__name__)
        if self.pinned and not self.translation_invariant:
            raise ValueError(
                f"{type(self).__name__}: 'pinned' needs a translation-invariant gate (softmax, temperature, "
                "top-K, sparsemax, the identity activation gate); this one is not, so pinning would "
                "restrict the model instead of removing a symmetry"
            )
        rows = num_experts - int(self.pinned)
        bound = 1.0 / math.sqrt(in_dim)
        self.weight = nn.Parameter(torch.empty(rows, in_dim).uniform_(-bound, bound))
        self.bias = nn.Parameter(torch.empty(rows).uniform_(-bound, bound))

    @property
    def translation_invariant(self) -> bool:
        return True

    @property
    def full_weight(self) -> Tensor:
        """β (K, d): ``weight`` with the pinned expert's zero row appended when pinned."""
        if not self.pinned:
            return self.weight
        return torch.cat([self.weight, self.weight.new_zeros(1, self.in_dim)])

    @property
    def full_bias(self) -> Tensor:
        """β_0 (K,): ``bias`` with the pinned expert's 0 appended when pinned."""
        if not self.pinned:
            return self.bias
        return torch.cat([self.bias, self.bias.new_zeros(1)])

    def logits(self, x: Tensor) -> Tensor:
        """z(x) = x βᵀ + β_0, shape (..., K), in x's dtype."""
        self._check_x(x)
        w, b = self.full_weight.to(x.dtype), self.full_bias.to(x.dtype)
        return x @ w.T + b

    def _scale(self) -> Tensor | None:
        """The temperature τ dividing the logits, if any."""
        return None

    def identifiable_parameters(self) -> dict[str, Tensor]:
        """β_k - β_K and β_0k - β_0K when translation invariant (divided by τ where there is one)."""
        w, b = self.full_weight.detach(), self.full_bias.detach()
        if self.translation_invariant:
            w, b = w[:-1] - w[-1], b[:-1] - b[-1]
        tau = self._scale()
        if tau is not None:
            w, b = w / tau.detach(), b / tau.detach()
        out = {"weight": w.clone(), "bias": b.clone()}
        for key, value in self.named_parameters():  # any other parameter (an activation's) as is
            if key not in ("weight", "bias", "raw_temperature"):
                out[key] = value.detach().clone()
        return out


class SoftmaxGate(LinearGate):
    """Softmax gate.

    Formula: π_k(x) = exp(β_kᵀx + β_0k) / Σ_j exp(β_jᵀx + β_0j)
    Paper: "Demystifying Softmax Gating Function in Gaussian Mixture of Experts" (Nguyen et al., NeurIPS 2023)
    """

    def __init__(self, in_dim: int, num_experts: int, *, pinned: bool = False) -> None:
        super().__init__(in_dim, num_experts, pinned=pinned)

    def forward(self, x: Tensor) -> Tensor:
        return torch.softmax(self.logits(x), dim=-1)

    def log_prob(self, x: Tensor) -> Tensor:
        return torch.log_softmax(self.logits(x), dim=-1)


class _TemperatureMixin(LinearGate):
    """A positive temperature τ (learned as softplus(raw_temperature), or a buffer set by a schedule)."""

    raw_temperature: Tensor

    def _init_temperature(self, temperature: float, learn_temperature: bool) -> None:
        cls = type(self).__name__
        tau = _check_positive(temperature, "temperature", cls)
        raw = positive_to_softplus_raw(torch.tensor(tau, dtype=self.weight.dtype))
        if _check_bool(learn_temperature, "learn_temperature", cls):
            self.raw_temperature = nn.Parameter(raw)
        else:
            self.register_buffer("raw_temperature", raw)
        self.learn_temperature = learn_temperature

    @property
    def temperature(self) -> Tensor:
        """τ > 0."""
        return softplus_to_positive(self.raw_temperature)

    def set_temperature(self, value: float) -> None:
        """Set τ (a schedule calls it once per step, e.g. τ_t = τ_0·r^t in dense-to-sparse training)."""
        tau = _check_positive(value, "value", type(self).__name__)
        with torch.no_grad():
            raw = positive_to_softplus_raw(torch.tensor(tau, dtype=torch.float64))
            self.raw_temperature.copy_(raw.to(self.raw_temperature.dtype))

    def _scale(self) -> Tensor | None:
        return self.temperature


class TemperatureGate(_TemperatureMixin):
    """Dense-to-sparse temperature gate; τ is learned (``learn_temperature=True``) or scheduled.

    (β, β_0, τ) -> (cβ, cβ_0, cτ) leaves π unchanged: the Fisher information has the null vector
    (β, β_0, τ) when τ is learned, which makes the parameter rates slow (as slow as 1/log n).

    Formula: π_k(x) = softmax_k((β_kᵀx + β_0k) / τ)
    Paper: "Is Temperature Sample Efficient for Softmax Gaussian Mixture of Experts?" (Nguyen, Akbarian,
        Ho, ICML 2024)
    """

    def __init__(self, in_dim: int, num_experts: int, *, temperature: float = 1.0,
                 learn_temperature: bool = True, pinned: bool = False) -> None:
        super().__init__(in_dim, num_experts, pinned=pinned)
        self._init_temperature(temperature, learn_temperature)

    def forward(self, x: Tensor) -> Tensor:
        return torch.softmax(self.logits(x) / self.temperature.to(x.dtype), dim=-1)

    def log_prob(self, x: Tensor) -> Tensor:
        return torch.log_softmax(self.logits(x) / self.temperature.to(x.dtype), dim=-1)


def _elementwise_activation(activation: str, params: Mapping[str, Any] | None,
                            trainable: bool) -> Activation:
    if not isinstance(activation, str):
        raise TypeError(f"ActivationGate: 'activation' must be a registered name (str), "
                        f"got {type(activation).__name__}")
    entry = spec(activation)  # ValueError (with the closest names) if unknown
    if entry.kind != "activation" or not entry.elementwise:
        raise ValueError(
            f"ActivationGate: 'activation' must be an elementwise activation (one of "
            f"{', '.join(n for n in names() if spec(n).elementwise)}), got {activation!r}, "
            f"which {'is a probability map' if entry.kind != 'activation' else 'mixes entries'}"
        )
    return get(activation, trainable=trainable, **dict(params or {}))


class ActivationGate(_TemperatureMixin):
    """Activation dense-to-sparse gate: an elementwise activation σ on the logits before the softmax.

    With a non-homogeneous σ (tanh, sigmoid, GELU) the temperature's scale symmetry is broken; the
    identity gives :class:`TemperatureGate`. ``activation_params`` are σ's parameters (fixed unless
    ``train_activation``). Only the identity keeps translation invariance, so only it may be pinned.

    Formula: π_k(x) = softmax_k(σ(β_kᵀx + β_0k) / τ)
    Paper: "Is Temperature Sample Efficient for Softmax Gaussian Mixture of Experts?" (Nguyen, Akbarian,
        Ho, ICML 2024)
    """

    def __init__(self, in_dim: int, num_experts: int, *, activation: str = "tanh",
                 activation_params: Mapping[str, Any] | None = None, train_activation: bool = False,
                 temperature: float = 1.0, learn_temperature: bool = True, pinned: bool = False) -> None:
        act = _elementwise_activation(activation, activation_params,
                                      _check_bool(train_activation, "train_activation", "ActivationGate"))
        self._is_identity = activation == "identity"
        super().__init__(in_dim, num_experts, pinned=pinned)
        self.activation = act
        self._init_temperature(temperature, learn_temperature)

    @property
    def translation_invariant(self) -> bool:
        return self.__dict__.get("_is_identity", False)

    def _scale(self) -> Tensor | None:
        return self.temperature if self.translation_invariant else None  # no scale symmetry otherwise

    def identifiable_parameters(self) -> dict[str, Tensor]:
        """β/τ, β_0/τ (differences) for the identity; β, β_0 and τ themselves for a non-homogeneous σ."""
        out = super().identifiable_parameters()
        if not self.translation_invariant:
            out["temperature"] = self.temperature.detach().clone()
        return out

    def _activated(self, x: Tensor) -> Tensor:
        return self.activation(self.logits(x)) / self.temperature.to(x.dtype)

    def forward(self, x: Tensor) -> Tensor:
        return torch.softmax(self._activated(x), dim=-1)

    def log_prob(self, x: Tensor) -> Tensor:
        return torch.log_softmax(self._activated(x), dim=-1)


class TopKGate(LinearGate):
    """Top-K sparse softmax gate: softmax over the k largest logits, exactly 0 elsewhere.

    k = K is the dense softmax, k = 1 a hard partition (discontinuous where the top-k set changes:
    fit by EM, SVI-MAP or direct optimisation, not HMC). Ties at the k-th logit are all kept.

    Formula: π_k(x) = exp(z_k) / Σ_{j ∈ top-k(z)} exp(z_j) for k ∈ top-k(z(x)), else 0
    Paper: "Statistical Perspective of Top-K Sparse Softmax Gating Mixture of Experts" (Nguyen et al.,
        ICLR 2024)
    """

    smoothness: ClassVar[Smoothness] = "discontinuous"
    sparse: ClassVar[bool] = True

    def __init__(self, in_dim: int, num_experts: int, *, k: int, pinned: bool = False) -> None:
        super().__init__(in_dim, num_experts, pinned=pinned)
        self.k = _check_int(k, "k", 1, "TopKGate")
        if self.k > num_experts:
            raise ValueError(f"TopKGate: 'k' must be in [1, num_experts={num_experts}], got {k}")

    def _masked(self, x: Tensor) -> Tensor:
        z = self.logits(x)
        kth = torch.topk(z.detach(), self.k, dim=-1).values[..., -1:]
        return torch.where(z >= kth, z, torch.full_like(z, -math.inf))

    def forward(self, x: Tensor) -> Tensor:
        return torch.softmax(self._masked(x), dim=-1)

    def log_prob(self, x: Tensor) -> Tensor:
        return torch.log_softmax(self._masked(x), dim=-1)


class SparsemaxGate(_TemperatureMixin):
    """Sparsemax gate: the Euclidean projection of z/τ onto the simplex (exact zeros, C0).

    τ is fixed by default: learned together with β it is the same scale symmetry as the temperature gate's.

    Formula: π(x) = argmin_{p ∈ Δ} ||p - z(x)/τ||²
    Paper: "From Softmax to Sparsemax" (Martins & Astudillo, ICML 2016)
    """

    smoothness: ClassVar[Smoothness] = "C0"
    sparse: ClassVar[bool] = True

    def __init__(self, in_dim: int, num_experts: int, *, temperature: float = 1.0,
                 learn_temperature: bool = False, pinned: bool = False) -> None:
        super().__init__(in_dim, num_experts, pinned=pinned)
        self._init_temperature(temperature, learn_temperature)

    def forward(self, x: Tensor) -> Tensor:
        return sparsemax(self.logits(x), temperature=self.temperature.to(x.dtype))


class StableMaxGate(LinearGate):
    """StableMax gate: softmax with exp replaced by s, of linear growth (C1; not translation invariant).

    Formula: π_k(x) = s(z_k) / Σ_j s(z_j), s(t) = t + 1 (t >= 0), 1 / (1 - t) (t < 0)
    Paper: "Grokking at the Edge of Numerical Stability" (Prieto et al., ICLR 2025)
    """

    smoothness: ClassVar[Smoothness] = "C1"

    def __init__(self, in_dim: int, num_experts: int, *, pinned: bool = False) -> None:
        super().__init__(in_dim, num_experts, pinned=pinned)

    @property
    def translation_invariant(self) -> bool:
        return False

    def forward(self, x: Tensor) -> Tensor:
        return stablemax(self.logits(x))


def smooth_step(t: Tensor, gamma: float = 1.0) -> Tensor:
    """The cubic smooth-step of the Tree Ensemble Layer (C1, not C2).

    S(t) = 0 (t <= -γ/2), -2t³/γ³ + 3t/(2γ) + 1/2 (|t| <= γ/2), 1 (t >= γ/2); S'(±γ/2) = 0.
    Paper: "The Tree Ensemble Layer: Differentiability meets Conditional Computation" (Hazimeh et al.,
        ICML 2020)
    """
    c = torch.clamp(t, -gamma / 2, gamma / 2)
    return -2 * c**3 / gamma**3 + 3 * c / (2 * gamma) + 0.5


class DSelectKGate(Gate):
    """DSelect-k: k differentiable single-expert selectors built from smooth-steps, mixed by softmax(w).

    Selector l has m = ⌈log₂ K⌉ logits z^(l) and puts r_i(z) = Π_j [S(z_j) if bit j of i else 1 - S(z_j)]
    on code i; codes i >= K are unreachable, so Σ π <= 1 with equality when K = 2^m or the
    unreachable mass is 0. Per-example routing (default): z^(l) = Z_l x + z0_l and w = W x + w0; with
    ``per_example=False`` only the constant parts. Init: z ~ U(-γ/100, γ/100), w ~ U(0, 1), slopes 0.
    ``regularization`` = Σ_l (1/Σ_{i<K} r_i(z^(l)) - 1) (0 once no mass leaks to unreachable codes; finite)
    plus ``entropy_weight`` times the selectors' entropy (pushes S to {0, 1}).

    Formula: π(x) = Σ_{l=1..k} softmax(w(x))_l · r(z^(l)(x))
    Paper: "DSelect-k: Differentiable Selection in the Mixture of Experts with Applications to
        Multi-Task Learning" (Hazimeh et al., NeurIPS 2021)
    """

    smoothness: ClassVar[Smoothness] = "C1"
    sparse: ClassVar[bool] = True

    def __init__(self, in_dim: int, num_experts: int, *, k: int, gamma: float = 1.0,
                 per_example: bool = True, entropy_weight: float = 1e-6) -> None:
        super().__init__(in_dim, num_experts)
        self.k = _check_int(k, "k", 1, "DSelectKGate")
        if self.k > num_experts:
            raise ValueError(f"DSelectKGate: 'k' must be in [1, num_experts={num_experts}], got {k}")
        self.gamma = _check_positive(gamma, "gamma", "DSelectKGate")
        self.per_example = _check_bool(per_example, "per_example", "DSelectKGate")
        bad_weight = isinstance(entropy_weight, bool) or not isinstance(entropy_weight, int | float)
        if bad_weight or not (math.isfinite(entropy_weight) and entropy_weight >= 0):
            raise ValueError(f"DSelectKGate: 'entropy_weight' must be a float >= 0, got {entropy_weight!r}")
        self.entropy_weight = float(entropy_weight)
        self.num_bits = max(1, math.ceil(math.log2(num_experts)))
        codes = (torch.arange(2**self.num_bits)[:, None] >> torch.arange(self.num_bits)) & 1
        self.register_buffer("codes", codes.to(torch.get_default_dtype()))  # (2^m, m)
        g = self.gamma / 100
        self.z_bias = nn.Parameter(torch.empty(self.k, self.num_bits).uniform_(-g, g))
        self.w_bias = nn.Parameter(torch.empty(self.k).uniform_(0.0, 1.0))
        if self.per_example:
            self.z_weight = nn.Parameter(torch.zeros(self.k, self.num_bits, in_dim))
            self.w_weight = nn.Parameter(torch.zeros(self.k, in_dim))

    def selector_logits(self, x: Tensor) -> tuple[Tensor, Tensor]:
        """(z (..., k, m), w (..., k)) at x."""
        self._check_x(x)
        shape = x.shape[:-1]
        z = self.z_bias.to(x.dtype).expand(*shape, self.k, self.num_bits)
        w = self.w_bias.to(x.dtype).expand(*shape, self.k)
        if self.per_example:
            z = z + torch.einsum("lmd,...d->...lm", self.z_weight.to(x.dtype), x)
            w = w + x @ self.w_weight.to(x.dtype).T
        return z, w

    def selectors(self, x: Tensor) -> tuple[Tensor, Tensor]:
        """(r (..., k, 2^m): each selector's mass on every code, softmax(w) (..., k))."""
        z, w = self.selector_logits(x)
        s = smooth_step(z, self.gamma).unsqueeze(-2)  # (..., k, 1, m)
        codes = cast(Tensor, self.codes).to(x.dtype)
        r = torch.prod(codes * s + (1 - codes) * (1 - s), dim=-1)  # (..., k, 2^m)
        return r, torch.softmax(w, dim=-1)

    def forward(self, x: Tensor) -> Tensor:
        r, weights = self.selectors(x)
        return torch.einsum("...l,...li->...i", weights, r[..., : self.num_experts])

    def regularization(self, x: Tensor) -> Tensor:
        """Mean over x of Σ_l (1/Σ_{i<K} r_i - 1) + entropy_weight · Σ_l H(r^(l))."""
        r, _ = self.selectors(x)
        # a selector saturated on an unreachable code has reach 0: floored at the dtype's eps, the penalty
        # is large (1/eps) but finite, also summed over a batch, and its gradient is 0 there (not
        # 1/0 = inf times S' = 0, a NaN)
        reach = torch.clamp(r[..., : self.num_experts].sum(-1), min=torch.finfo(r.dtype).eps)
        penalty = (1 / reach - 1).sum(-1)
        if self.entropy_weight > 0:
            positive = r > 0
            plogp = torch.where(positive, r * torch.log(torch.where(positive, r, torch.ones_like(r))),
                                torch.zeros_like(r))
            entropy = -plogp.sum(-1).sum(-1)
            penalty = penalty + self.entropy_weight * entropy
        return penalty.mean()


#: Gate classes by name, for :func:`make_gate`.
GATES: dict[str, type[Gate]] = {
    "softmax": SoftmaxGate,
    "temperature": TemperatureGate,
    "activation": ActivationGate,
    "topk": TopKGate,
    "dselect_k": DSelectKGate,
    "sparsemax": SparsemaxGate,
    "stablemax": StableMaxGate,
}


def gate_options(name: str) -> dict[str, Any]:
    """The keyword options of gate ``name`` with their defaults (``inspect.Parameter.empty`` if required)."""
    cls = _gate_class(name)
    params = inspect.signature(cls.__init__).parameters.values()
    return {p.name: p.default for p in params if p.kind is inspect.Parameter.KEYWORD_ONLY}


def _gate_class(name: str) -> type[Gate]:
    if not isinstance(name, str):
        raise TypeError(f"make_gate: 'name' must be a str, got {type(name).__name__}")
    if name not in GATES:
        raise ValueError(f"make_gate: unknown gate {name!r}; expected one of {', '.join(GATES)}")
    return GATES[name]


def make_gate(name: str, in_dim: int, num_experts: int, options: Mapping[str, Any] | None = None) -> Gate:
    """The gate ``name`` (a key of :data:`GATES`) with keyword ``options`` (see :func:`gate_options`).

    ``make_gate("topk", 3, 4, {"k": 2})`` is ``TopKGate(3, 4, k=2)``.

    Raises:
        ValueError: unknown name, or an option value the gate rejects.
        TypeError: an option the gate does not take, or a required one missing.
    """
    cls = _gate_class(name)
    opts = dict(options or {})
    allowed = gate_options(name)
    unknown = sorted(set(opts) - set(allowed))
    if unknown:
        raise TypeError(f"make_gate: gate {name!r} takes options {', '.join(allowed) or 'none'}; "
                        f"got unexpected {', '.join(map(repr, unknown))}")
    missing = [k for k, v in allowed.items() if v is inspect.Parameter.empty and k not in opts]
    if missing:
        raise TypeError(f"make_gate: gate {name!r} needs option(s) {', '.join(map(repr, missing))}")
    factory: Callable[..., Gate] = cls
    return factory(in_dim, num_experts, **opts)
