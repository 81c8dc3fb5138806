"""Mixture of experts: simulate, fit with two gates, plot, and sample the posterior with NUTS.

1. Simulate n = 5,000 rows from a 3-expert softmax-gated Gaussian MoE (``simulate_moe``).
2. Fit by maximum likelihood with the softmax gate and with the temperature gate (learned τ), print the
   parameter errors (Voronoi loss and per-parameter errors after matching the experts).
3. Plot the data, the fitted experts and both gates (``docs/img/moe_gates.png``).
4. Sample the posterior of the softmax-gated model with bayesact's NUTS on a subsample, relabel the draws
   (Hungarian matching to the MLE) and print ArviZ's summary before and after relabelling.

Run: ``.venv/bin/python examples/moe_gates.py`` (``--quick`` for a smaller run).
"""

from __future__ import annotations

import argparse
import time
from pathlib import Path

import arviz as az
import matplotlib

matplotlib.use("Agg")
import matplotlib.pyplot as plt
import torch
from scipy.optimize import linear_sum_assignment

from bayesact.infer import mcmc
from bayesact.models import GaussianMoE, relabel, simulate_moe, voronoi_loss
from bayesact.models.moe import mixing_params

TRUE = {
    "gate_weight": torch.tensor([[2.0], [-2.0], [0.0]], dtype=torch.float64),
    "gate_bias": torch.tensor([0.5, 0.0, 0.0], dtype=torch.float64),
    "expert_weight": torch.tensor([[1.0], [-1.0], [0.0]], dtype=torch.float64),
    "expert_bias": torch.tensor([2.0, -2.0, 0.0], dtype=torch.float64),
    "noise_std": torch.tensor([0.3, 0.5, 0.4], dtype=torch.float64),
}


def matched_errors(fitted: dict[str, torch.Tensor]) -> dict[str, float]:
    """Largest absolute error per parameter after matching fitted to true experts (Hungarian, on a, b, log σ)
    and translating the fitted gate so the last true expert's is 0."""
    def feats(p: dict[str, torch.Tensor]) -> torch.Tensor:
        return torch.cat([p["expert_weight"], p["expert_bias"][:, None], p["noise_std"].log()[:, None]], 1)

    cost = torch.cdist(feats(TRUE), feats(fitted)).numpy()
    perm = torch.as_tensor(linear_sum_assignment(cost)[1])
    p = {k: v[perm] for k, v in fitted.items()}
    p["gate_weight"] = p["gate_weight"] - p["gate_weight"][-1]
    p["gate_bias"] = p["gate_bias"] - p["gate_bias"][-1]
    return {k: float((p[k] - TRUE[k]).abs().max()) for k in TRUE}


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--quick", action="store_true", help="smaller data and shorter chains")
    args = parser.parse_args()
    n, n_nuts, draws = (1000, 100, 100) if args.quick else (5000, 300, 300)
    torch.manual_seed(0)
    x, y = simulate_moe(n, TRUE, seed=1)

    fits = {}
    print(f"MLE on n = {n} (3 restarts each)")
    for gate in ("softmax", "temperature"):
        moe = GaussianMoE(1, 3, gate=gate).double()
        start = time.perf_counter()
        fit = moe.fit(x, y, num_restarts=3, seed=0)
        params = mixing_params(moe)  # the temperature gate's β/τ: the identified quantity
        errors = matched_errors(params)
        print(f"  {gate:11s} mean log-lik {fit.log_likelihood:.4f}  "
              f"Voronoi loss {voronoi_loss(moe, TRUE):.3f}  ({time.perf_counter() - start:.1f} s)")
        print("    max abs errors: " + ", ".join(f"{k} {v:.3f}" for k, v in errors.items()))
        if gate == "temperature":
            tau = float(moe.gate.temperature.detach())
            print(f"    τ = {tau:.3f} (not identified alone: (β, β_0, τ) -> c(β, β_0, τ) leaves π unchanged)")
        fits[gate] = moe

    # the fitted experts and gates
    grid = torch.linspace(-3, 3, 200, dtype=torch.float64)[:, None]
    fig, axes = plt.subplots(1, 2, figsize=(11, 4))
    axes[0].scatter(x[:1500, 0], y[:1500], s=3, alpha=0.3, color="grey", label="data")
    moe = fits["softmax"]
    with torch.no_grad():
        means = moe.expert(grid)
        for name, style in (("softmax", "-"), ("temperature", "--")):
            weights = fits[name].components(grid)[0]
            for k in range(3):
                label = f"{name} gate" if k == 0 else None
                axes[1].plot(grid[:, 0], weights[:, k], style, color=f"C{k}", label=label)
    true_w = torch.softmax(grid @ TRUE["gate_weight"].T + TRUE["gate_bias"], -1)
    for k in range(3):
        axes[0].plot(grid[:, 0], means[:, k], color=f"C{k}", label=f"expert {k} (softmax fit)")
        axes[1].plot(grid[:, 0], true_w[:, k], ":", color="black", label="true π" if k == 0 else None)
    axes[0].set(xlabel="x", ylabel="y", title="data and fitted experts")
    axes[1].set(xlabel="x", ylabel="π_k(x)", title="gates: softmax (solid), temperature (dashed)")
    axes[0].legend(fontsize=7)
    axes[1].legend(fontsize=7)
    out = Path(__file__).resolve().parents[1] / "docs" / "img" / "moe_gates.png"
    fig.tight_layout()
    fig.savefig(out, dpi=110)
    print(f"figure: {out}")

    # the posterior: NUTS on a subsample, then relabelling
    print(f"NUTS on n = {n_nuts}: 4 chains x {draws} draws")
    bayes = GaussianMoE(1, 3).double()
    start = time.perf_counter()
    post = mcmc(bayes, x[:n_nuts], y[:n_nuts], num_chains=4, num_warmup=draws, num_samples=draws, seed=0,
                progress=False)
    print(f"  {time.perf_counter() - start:.0f} s, {post.num_divergences} divergences")
    columns = ["mean", "sd", "ess_bulk", "r_hat"]
    print("before relabelling:")
    print(az.summary(post.to_arviz())[columns].to_string())
    relabelled = relabel(post, fits["softmax"])
    print("after relabelling (Hungarian matching of every draw to the MLE):")
    print(az.summary(relabelled.to_arviz())[columns].to_string())


if __name__ == "__main__":
    main()
