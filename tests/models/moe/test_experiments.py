"""simulate_moe, voronoi_loss and relabel."""

from __future__ import annotations

import math

import pytest
import torch

from bayesact.infer import Posterior
from bayesact.models.moe import GaussianMoE, mixing_params, relabel, simulate_moe, voronoi_loss
from tests.models.moe.test_model import TRUE3


def permuted(params: dict[str, torch.Tensor], perm: list[int]) -> dict[str, torch.Tensor]:
    return {k: v[perm] for k, v in params.items()}


def test_simulate_is_reproducible_and_follows_the_model() -> None:
    """Same seed, same data; E[y | x] = Σ_k π_k(x) m_k(x) and E[y² | x] = Σ_k π_k(m_k² + σ_k²) (Monte Carlo,
    4 standard errors)."""
    x, y = simulate_moe(20000, TRUE3, seed=3)
    x2, y2 = simulate_moe(20000, TRUE3, seed=3)
    assert torch.equal(x, x2) and torch.equal(y, y2)
    assert not torch.equal(y, simulate_moe(20000, TRUE3, seed=4)[1])
    weights = torch.softmax(x @ TRUE3["gate_weight"].T + TRUE3["gate_bias"], dim=-1)
    means = x @ TRUE3["expert_weight"].T + TRUE3["expert_bias"]
    resid = y - (weights * means).sum(-1)
    assert abs(float(resid.mean())) < 4 * float(resid.std()) / math.sqrt(20000)
    # second moment: E[y²|x] = Σ π (m² + σ²)
    second = (weights * (means**2 + TRUE3["noise_std"] ** 2)).sum(-1)
    d = y**2 - second
    assert abs(float(d.mean())) < 4 * float(d.std()) / math.sqrt(20000)


def test_simulate_from_a_model_uses_its_gate_and_interventions() -> None:
    moe = GaussianMoE(1, 3).double()
    moe.set_point_values({"gate.weight": torch.zeros(2, 1), "gate.bias": torch.zeros(2),
                          "expert.weight": torch.zeros(3, 1), "expert.bias": torch.tensor([-5.0, 0.0, 5.0]),
                          "noise_std": torch.full((3,), 0.1)})
    _, y = simulate_moe(3000, moe, seed=0)
    counts = torch.stack([(y - c).abs().lt(1).sum() for c in (-5.0, 0.0, 5.0)])
    assert int(counts.sum()) == 3000 and int(counts.min()) > 900
    from bayesact.models.moe import force_experts

    with force_experts(moe, [2]):
        _, y = simulate_moe(100, moe, seed=0)
    assert bool(((y - 5).abs() < 1).all())


def test_voronoi_loss_is_zero_at_the_truth_up_to_permutation_and_translation() -> None:
    assert voronoi_loss(TRUE3, TRUE3) == pytest.approx(0.0, abs=1e-12)
    moved = permuted(TRUE3, [2, 0, 1])
    moved["gate_weight"] = moved["gate_weight"] + 0.7
    moved["gate_bias"] = moved["gate_bias"] - 1.3
    assert voronoi_loss(moved, TRUE3) == pytest.approx(0.0, abs=1e-12)


def test_voronoi_loss_singleton_cells_use_first_powers() -> None:
    """Moving one expert's intercept b by δ (small, so the cells do not change) costs exp(β_0) δ exactly."""
    for delta in (1e-3, 1e-2):
        moved = {k: v.clone() for k, v in TRUE3.items()}
        moved["expert_bias"][1] += delta
        assert voronoi_loss(moved, TRUE3) == pytest.approx(math.exp(0.0) * delta, rel=1e-9)


def test_voronoi_loss_two_atom_cell_uses_rbar_powers_and_an_empty_cell_costs_its_mass() -> None:
    """Expert 0 split into two atoms at (β_1 ± γ, b ∓ δ) with half the mass each: the cell of size 2 costs
    ‖Δβ_1‖^4 + |Δb|^4 = γ⁴ + δ⁴ per atom (r̄(2) = 4 on each difference separately, as the authors' code
    computes it; regression: the joint norm ‖(Δβ_1, Δb)‖^4 = (γ² + δ²)², used before, is 2γ²δ² = 0.0008
    larger per atom here); the true expert 2, left without a fitted atom, costs exp(β*_02) = 1 in the mass
    term."""
    true = {k: v.clone() for k, v in TRUE3.items()}
    delta, gamma = 0.1, 0.2
    split = {k: torch.cat([v[:1], v[:1], v[1:2]]) for k, v in true.items()}
    split["expert_bias"] = torch.tensor([2.0 - delta, 2.0 + delta, -2.0], dtype=torch.float64)
    split["gate_weight"] = torch.tensor([[2.0 + gamma], [2.0 - gamma], [-2.0]], dtype=torch.float64)
    split["gate_bias"] = torch.tensor([0.5 - math.log(2), 0.5 - math.log(2), 0.0], dtype=torch.float64)
    # masses: fitted exp(β̂_0) after the translation that equalises the total mass with the truth's
    total_fit = 2 * math.exp(0.5 - math.log(2)) + 1.0
    total_true = math.exp(0.5) + 2.0
    shift = math.log(total_fit) - math.log(total_true)
    m0, m2 = math.exp(0.5 - math.log(2) - shift), math.exp(-shift)
    # β_1 translation: the mean over the cell pairs of β̂_1i − β*_1j is (γ − γ + 0) / 3 = 0
    expected = abs(2 * m0 - math.exp(0.5)) + abs(m2 - 1.0) + 1.0 + 2 * m0 * (gamma**4 + delta**4)
    assert voronoi_loss(split, true) == pytest.approx(expected, rel=1e-10)
    with pytest.raises(ValueError, match="rbar"):
        voronoi_loss(split, true, rbar={3: 6.0})


def test_voronoi_loss_bad_input() -> None:
    with pytest.raises(ValueError, match="'fitted'"):
        voronoi_loss({"gate_weight": torch.zeros(3, 1)}, TRUE3)
    bad = dict(TRUE3, noise_std=torch.tensor([0.1, -0.2, 0.3], dtype=torch.float64))
    with pytest.raises(ValueError, match="noise_std"):
        voronoi_loss(TRUE3, bad)
    with pytest.raises(ValueError, match="'n'"):
        simulate_moe(0, TRUE3, seed=0)


def test_relabel_undoes_label_switching_and_keeps_the_likelihood() -> None:
    """Draws that are the truth under random expert permutations (re-pinned) come back as the truth exactly,
    and every relabelled draw has the same likelihood as before (a symmetry of the model)."""
    moe = GaussianMoE(1, 3).double()
    full = {"gate.weight": TRUE3["gate_weight"] - TRUE3["gate_weight"][2],
            "gate.bias": TRUE3["gate_bias"] - TRUE3["gate_bias"][2],
            "expert.weight": TRUE3["expert_weight"], "expert.bias": TRUE3["expert_bias"],
            "noise_std": TRUE3["noise_std"]}
    g = torch.Generator().manual_seed(0)
    draws: dict[str, list[torch.Tensor]] = {k: [] for k in full}
    for _ in range(2 * 5):
        perm = torch.randperm(3, generator=g)
        for k, v in full.items():
            p = v[perm]
            if k.startswith("gate."):
                p = (p - p[-1])[:-1]
            draws[k].append(p)
    samples = {k: torch.stack(v).reshape(2, 5, *v[0].shape) for k, v in draws.items()}
    reference = {k: v for k, v in full.items() if not k.startswith("gate.")}
    out = relabel(samples, reference, model=moe)
    x, y = simulate_moe(50, TRUE3, seed=1)
    for c in range(2):
        for d in range(5):
            for k, v in full.items():
                expect = v[:-1] if k.startswith("gate.") else v
                assert torch.allclose(out[k][c, d], expect, atol=1e-12), k
            before = moe.log_likelihood(x, y, {k: s[c, d] for k, s in samples.items()})
            assert torch.allclose(before, moe.log_likelihood(x, y, {k: s[c, d] for k, s in out.items()}))
    # a Posterior in, a Posterior out (with the model), ready for ArviZ
    post = Posterior(samples, {}, model=moe, args=(x, y))
    relabelled = relabel(post, reference)
    assert isinstance(relabelled, Posterior) and relabelled.model is moe
    assert float(relabelled.samples["expert.bias"].std(dim=(0, 1)).max()) < 1e-9


def test_relabel_bad_input() -> None:
    moe = GaussianMoE(1, 3).double()
    with pytest.raises(ValueError, match="'model'"):
        relabel({"noise_std": torch.ones(1, 1, 3)}, {})
    with pytest.raises(ValueError, match="lacks"):
        relabel({"noise_std": torch.ones(1, 1, 3)}, {}, model=moe)
    dselect = GaussianMoE(1, 4, gate="dselect", gate_kwargs={"k": 4}).double()
    samples = {k: v.expand(1, 1, *v.shape) for k, v in dselect.point_values().items()}
    with pytest.raises(ValueError, match="no expert dimension"):
        relabel(samples, dselect, model=dselect)


def test_mixing_params_divide_by_the_temperature() -> None:
    moe = GaussianMoE(1, 3, gate="temperature", gate_kwargs={"temperature": 2.0}).double()
    p = mixing_params(moe)
    assert torch.allclose(p["gate_weight"], moe.gate.full_weight.detach() / 2.0)
    assert float(p["gate_weight"][-1, 0]) == 0.0


def test_relabelled_posterior_feeds_bayesact_predictive() -> None:
    """relabel returns a Posterior of the same model: bayesact.infer.predictive draws y from it; with every
    draw at the truth, the draws' mean at each x is Σ_k π_k(x) m_k(x) (Monte Carlo, 4.5 standard errors)."""
    from bayesact.infer import predictive

    moe = GaussianMoE(1, 3).double()
    truth = {"gate.weight": (TRUE3["gate_weight"] - TRUE3["gate_weight"][2])[:2],
             "gate.bias": (TRUE3["gate_bias"] - TRUE3["gate_bias"][2])[:2],
             "expert.weight": TRUE3["expert_weight"], "expert.bias": TRUE3["expert_bias"],
             "noise_std": TRUE3["noise_std"]}
    samples = {k: v.expand(2, 1000, *v.shape).clone() for k, v in truth.items()}
    x = torch.linspace(-2, 2, 5, dtype=torch.float64)[:, None]
    post = Posterior(samples, {}, model=moe, args=(x, torch.zeros(5, dtype=torch.float64)),
                     observed={"obs": torch.zeros(5, 1, dtype=torch.float64)})
    post = relabel(post, {k: v for k, v in truth.items() if not k.startswith("gate.")})
    draws = predictive(moe, post, x, None, seed=0)["obs"][..., 0].reshape(-1, 5)
    moe.set_point_values(truth)
    mixture = moe.predict(x)
    se = mixture.variance.sqrt() / math.sqrt(draws.shape[0])
    assert bool(((draws.mean(0) - mixture.mean).abs() < 4.5 * se).all())
