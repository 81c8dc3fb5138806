"""Fisher-information mechanism test (float64, deterministic): why the temperature gate is slow.

For p(y | x) = Σ_k π_k(x) N(y; a_k x + b_k, σ_k²) at θ*, the per-sample scores J (n × P) give
F = JᵀJ / n. With a learned temperature, (β, β_0, τ) -> c(β, β_0, τ) leaves π unchanged, so
v = (β, β_0, τ, 0, ..., 0) satisfies J v = 0 sample by sample: F has an exact null vector (the PDE
∂u/∂τ = -(1/τ)(β·∇_β u + β_0·∂_β0 u) of Nguyen, Akbarian & Ho, ICML 2024). A non-homogeneous
activation σ (tanh, sigmoid, GELU) before the softmax breaks it: F is then non-singular. A positively
homogeneous σ (ReLU, leaky ReLU) restores the null vector, which is the control showing the test can
fail. The spectra are printed by ``python tests/models/moe/test_fisher.py``.
"""

from __future__ import annotations

import math
from typing import Any

import pytest
import torch
from torch import Tensor
from torch.func import functional_call, jacfwd

from bayesact.models.moe.gates import ActivationGate, Gate, TemperatureGate, make_gate

K = 3
A = torch.tensor([1.0, -1.0, 0.0], dtype=torch.float64)  # expert slopes
B = torch.tensor([0.0, 1.0, -1.0], dtype=torch.float64)  # expert intercepts
SIGMA = torch.tensor([0.3, 0.4, 0.5], dtype=torch.float64)
BETA = torch.tensor([[2.0], [-1.0], [0.0]], dtype=torch.float64)  # gate slopes (last row 0: pinnable)
BETA0 = torch.tensor([0.5, -0.3, 0.0], dtype=torch.float64)
TAU = 0.8
N = 2000


def _gate_at_truth(name: str, options: dict[str, Any]) -> Gate:
    gate = make_gate(name, 1, K, options).double()
    rows = K - 1 if options.get("pinned", False) else K
    with torch.no_grad():
        gate.weight.copy_(BETA[:rows])
        gate.bias.copy_(BETA0[:rows])
    return gate


def _data(gate: Gate, n: int = N, seed: int = 0) -> tuple[Tensor, Tensor]:
    g = torch.Generator().manual_seed(seed)
    x = torch.randn(n, 1, generator=g, dtype=torch.float64)
    with torch.no_grad():
        pi = gate(x)
    z = torch.multinomial(pi, 1, generator=g).squeeze(-1)
    y = A[z] * x[:, 0] + B[z] + SIGMA[z] * torch.randn(n, generator=g, dtype=torch.float64)
    return x, y


def scores(gate: Gate, x: Tensor, y: Tensor) -> tuple[Tensor, list[tuple[str, torch.Size]]]:
    """Per-sample scores ∇_θ log p(y_i | x_i) (n × P) for the gate's parameters and (a, b, log σ)."""
    gate_params = {k: v.detach() for k, v in gate.named_parameters()}
    layout = [(k, v.shape) for k, v in gate_params.items()]
    layout += [("a", A.shape), ("b", B.shape), ("log_sigma", SIGMA.shape)]
    theta = torch.cat([v.reshape(-1) for v in gate_params.values()] + [A, B, SIGMA.log()])

    def loglik(flat: Tensor) -> Tensor:
        parts, i = {}, 0
        for key, shape in layout:
            size = math.prod(shape)
            parts[key] = flat[i : i + size].reshape(shape)
            i += size
        log_pi = torch.log(functional_call(gate, {k: parts[k] for k in gate_params}, (x,)))  # dense gates
        mean = parts["a"] * x + parts["b"]
        sigma = parts["log_sigma"].exp()
        log_n = -0.5 * ((y[:, None] - mean) / sigma) ** 2 - torch.log(sigma) - 0.5 * math.log(2 * math.pi)
        return torch.logsumexp(log_pi + log_n, dim=-1)

    return jacfwd(loglik)(theta), layout


def scale_vector(gate: Gate, layout: list[tuple[str, torch.Size]]) -> Tensor:
    """v = (β, β_0, τ) in the gate's coordinates (τ = softplus(raw): d raw = dτ / sigmoid(raw)), else 0."""
    params = dict(gate.named_parameters())
    parts = []
    for key, shape in layout:
        if key in ("weight", "bias"):
            parts.append(params[key].detach().reshape(-1))
        elif key == "raw_temperature":
            raw = params[key].detach()
            parts.append((torch.nn.functional.softplus(raw) / torch.sigmoid(raw)).reshape(-1))
        else:
            parts.append(torch.zeros(math.prod(shape), dtype=torch.float64))
    return torch.cat(parts)


def fisher(name: str, options: dict[str, Any]) -> tuple[Tensor, Tensor, Gate]:
    """(F, v, gate) at θ*, F = JᵀJ/n from N samples of the model itself."""
    gate = _gate_at_truth(name, options)
    if isinstance(gate, TemperatureGate | ActivationGate):
        gate.set_temperature(TAU)
    x, y = _data(gate)
    jac, layout = scores(gate, x, y)
    return jac.T @ jac / jac.shape[0], scale_vector(gate, layout), gate


def spectrum(f: Tensor) -> Tensor:
    return torch.linalg.eigvalsh(f)


def test_temperature_gate_has_the_exact_scale_null_vector() -> None:
    f, v, _ = fisher("temperature", {"pinned": True})
    null = float(torch.linalg.norm(f @ v) / torch.linalg.norm(v))
    eig = spectrum(f)
    assert null <= 1e-12 * float(eig[-1])  # F v = 0 to rounding
    assert float(eig[0]) <= 1e-12 * float(eig[-1])
    # the symmetry is the only degeneracy: with τ fixed (a scheduled τ) the spectrum is bounded away from 0
    fixed, _, _ = fisher("temperature", {"pinned": True, "learn_temperature": False})
    assert float(spectrum(fixed)[0]) > 1e-3 * float(spectrum(fixed)[-1])


@pytest.mark.parametrize("activation", ["tanh", "sigmoid", "gelu"])
def test_non_homogeneous_activation_gate_breaks_the_symmetry(activation: str) -> None:
    f, v, _ = fisher("activation", {"activation": activation, "temperature": TAU})
    eig = spectrum(f)
    # measured λ_min/λ_max: tanh 1.6e-4, sigmoid 3.5e-5, GELU 1.5e-5 (the weakest directions are gate
    # slopes where σ saturates or is nearly linear), against <= 1e-16 for the exact symmetry above
    assert float(eig[0]) > 1e-6 * float(eig[-1])  # no null direction left
    along_v = float(v @ f @ v / (v @ v))  # the former symmetry direction now carries information
    assert along_v > 1e-6 * float(eig[-1])


@pytest.mark.parametrize("activation", ["relu", "leaky_relu"])
def test_positively_homogeneous_activation_restores_the_null_vector(activation: str) -> None:
    f, v, _ = fisher("activation", {"activation": activation, "temperature": TAU})
    eig = spectrum(f)
    assert float(torch.linalg.norm(f @ v) / torch.linalg.norm(v)) <= 1e-12 * float(eig[-1])


def report() -> str:
    """The spectra (smallest three eigenvalues, largest, and v'Fv/v'v) as a markdown table."""
    lines = ["| gate | P | λ_min | λ_2 | λ_3 | λ_max | vᵀFv/vᵀv |", "|---|---|---|---|---|---|---|"]
    cases: list[tuple[str, str, dict[str, Any]]] = [
        ("temperature (τ learned, pinned)", "temperature", {"pinned": True}),
        ("temperature (τ fixed, pinned)", "temperature", {"pinned": True, "learn_temperature": False}),
        ("softmax (pinned)", "softmax", {"pinned": True}),
    ] + [(f"activation {a}", "activation", {"activation": a, "temperature": TAU})
         for a in ("tanh", "sigmoid", "gelu", "relu", "leaky_relu")]
    for label, name, options in cases:
        f, v, _ = fisher(name, options)
        eig = spectrum(f)
        scaled = "temperature" in label or "activation" in label
        vfv = float(v @ f @ v / (v @ v)) if scaled else math.nan
        lines.append(f"| {label} | {f.shape[0]} | {float(eig[0]):.2e} | {float(eig[1]):.2e} | "
                     f"{float(eig[2]):.2e} | {float(eig[-1]):.2e} | {vfv:.2e} |")
    return "\n".join(lines)


if __name__ == "__main__":
    print(report())
