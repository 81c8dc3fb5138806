"""Mixtures of experts: Gaussian experts behind a gate π(x) on the simplex (issue 15).

p(y | x) = Σ_k π_k(x) N(y; a_kᵀx + b_k, σ_k²), as a Pyro model with the expert index marginalised
(:class:`GaussianMoE`), the gates of :mod:`bayesact.models.moe.gates`, do-interventions on the gate
(:func:`mask_experts`, :func:`force_experts`) and experiment tools (:func:`simulate_moe`,
:func:`voronoi_loss`, :func:`relabel`).
"""

from ._gating import GATE_NAMES
from .experiments import PARAM_KEYS, mixing_params, relabel, simulate_moe, voronoi_loss
from .gates import (
    ActivationGate,
    DSelectKGate,
    Gate,
    LinearGate,
    SoftmaxGate,
    SparsemaxGate,
    StableMaxGate,
    TemperatureGate,
    TopKGate,
    make_gate,
)
from .interventions import force_experts, mask_experts
from .model import GaussianMoE, LinearExperts, MoEFit

__all__ = [
    "GATE_NAMES",
    "PARAM_KEYS",
    "ActivationGate",
    "DSelectKGate",
    "Gate",
    "GaussianMoE",
    "LinearExperts",
    "LinearGate",
    "MoEFit",
    "SoftmaxGate",
    "SparsemaxGate",
    "StableMaxGate",
    "TemperatureGate",
    "TopKGate",
    "force_experts",
    "make_gate",
    "mask_experts",
    "mixing_params",
    "relabel",
    "simulate_moe",
    "voronoi_loss",
]
