"""mask_experts / force_experts: do-interventions on the gate (MoTE semantics)."""

from __future__ import annotations

import pyro
import pytest
import torch

from bayesact.models.moe import GaussianMoE, force_experts, mask_experts


def fitted_like(gate: str = "softmax", **kwargs: object) -> GaussianMoE:
    moe = GaussianMoE(2, 4, gate=gate, gate_kwargs=kwargs or None).double()
    g = torch.Generator().manual_seed(0)
    values = {}
    for name, v in moe.point_values().items():
        r = torch.randn(v.shape, generator=g, dtype=torch.float64)
        values[name] = r.abs() + 0.5 if name == "noise_std" else 2 * r
    moe.set_point_values(values)
    return moe


def data(n: int = 50) -> tuple[torch.Tensor, torch.Tensor]:
    g = torch.Generator().manual_seed(1)
    x = torch.randn(n, 2, generator=g, dtype=torch.float64)
    return x, torch.randn(n, generator=g, dtype=torch.float64)


@pytest.mark.parametrize("gate", ["softmax", "stablemax"])
def test_masked_responsibilities_are_exactly_zero_and_the_rest_renormalise(gate: str) -> None:
    moe = fitted_like(gate)
    x, y = data()
    before = moe.responsibilities(x, y)
    with mask_experts(moe, [1, 3]):
        after = moe.responsibilities(x, y)
        weights = moe.components(x)[0]
    assert bool((after[:, [1, 3]] == 0).all())
    kept = before[:, [0, 2]]
    assert torch.allclose(after[:, [0, 2]], kept / kept.sum(-1, keepdim=True), atol=1e-12)
    assert bool((weights[:, [1, 3]] == 0).all())
    # leaving the block restores the gate
    assert torch.equal(moe.responsibilities(x, y), before)


def test_masking_a_softmax_expert_equals_a_minus_infinity_logit() -> None:
    moe = fitted_like("softmax")
    x, _ = data()
    logits = moe.gate.logits(x)
    with mask_experts(moe, 2):
        masked = moe.components(x)[0]
    expected = torch.softmax(logits.index_fill(-1, torch.tensor([2]), -torch.inf), dim=-1)
    assert torch.allclose(masked, expected, atol=1e-14)


def test_force_always_selects() -> None:
    """One forced expert gets π = 1 and responsibility 1 everywhere; a forced set is uniform on the set."""
    moe = fitted_like("topk", k=1)
    x, y = data()
    with force_experts(moe, [2]):
        assert torch.equal(moe.responsibilities(x, y), torch.eye(4, dtype=torch.float64)[2].expand(50, 4))
        pred = moe.predict(x)
    assert torch.allclose(pred.mean, x @ moe.expert.weight[2].detach() + moe.expert.bias[2].detach())
    with force_experts(moe, [0, 3]):
        w = moe.components(x)[0]
    assert torch.equal(w, torch.tensor([0.5, 0, 0, 0.5], dtype=torch.float64).expand(50, 4))


def test_mask_with_sparse_gate_whose_mass_was_all_on_the_masked_expert() -> None:
    """Top-1 rows that chose the masked expert fall back to the uniform distribution on the others."""
    moe = fitted_like("topk", k=1)
    x, _ = data()
    chosen = moe.components(x)[0].argmax(-1)
    target = int(chosen[0])
    with mask_experts(moe, [target]):
        w = moe.components(x)[0]
    rows = chosen == target
    assert bool((w[:, target] == 0).all())
    assert torch.allclose(w[rows].sum(-1), torch.ones(int(rows.sum()), dtype=torch.float64))
    assert torch.equal(w[~rows], torch.nn.functional.one_hot(chosen[~rows], 4).double())


def test_handlers_wrap_the_pyro_model_and_nest() -> None:
    """Called like the model, the handler runs it under the intervention; nested handlers compose."""
    moe = fitted_like()
    x, y = data()
    values = moe.point_values()
    conditioned = pyro.poutine.condition(moe, data=values)
    masked_mean = pyro.poutine.condition(mask_experts(moe, [0]), data=values)(x, y)
    with mask_experts(moe, [0]):
        assert torch.allclose(masked_mean, conditioned(x, y))
    with mask_experts(moe, [0]), force_experts(moe, [1]):
        mean = conditioned(x, y)
    assert torch.allclose(mean, x @ values["expert.weight"][1] + values["expert.bias"][1])
    assert not moe._interventions


def test_bad_interventions() -> None:
    moe = fitted_like()
    with pytest.raises(ValueError, match="'experts'"):
        mask_experts(moe, [4])
    with pytest.raises(ValueError, match="'experts'"):
        force_experts(moe, [])
    with pytest.raises(ValueError, match="at least one expert unmasked"):
        mask_experts(moe, range(4))
    with pytest.raises(TypeError, match="'moe'"):
        mask_experts(object(), [0])  # type: ignore[arg-type]
