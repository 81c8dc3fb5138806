"""The Gibbs hook as a typed protocol: who satisfies it, SGHMC finding it by isinstance, and the BNN
delegating it to its weight prior (same draws as the former BNN-side implementation)."""

from __future__ import annotations

import ast
from pathlib import Path

import pyro
import pyro.distributions as dist
import pytest
import torch

from bayesact.infer import sghmc
from bayesact.infer.protocols import GibbsHook
from bayesact.models import BNN
from bayesact.priors import GaussianPrior, HierarchicalPrior

DT = torch.float64


def test_infer_protocols_import_no_other_bayesact_package() -> None:
    tree = ast.parse(Path(__file__).parents[2].joinpath("bayesact/infer/protocols.py").read_text())
    modules = [n.module or "" for n in ast.walk(tree) if isinstance(n, ast.ImportFrom)]
    modules += [a.name for n in ast.walk(tree) if isinstance(n, ast.Import) for a in n.names]
    assert modules and not [m for m in modules if m.startswith("bayesact") or m.startswith(".")]


def test_priors_and_bnns_satisfy_the_gibbs_hook_structurally() -> None:
    hierarchical = BNN(1, hidden=(4,), prior=HierarchicalPrior())
    gaussian = BNN(1, hidden=(4,), prior=GaussianPrior())
    for hook in (hierarchical, gaussian, hierarchical.prior, gaussian.prior):
        assert isinstance(hook, GibbsHook)
    expected = tuple(f"layers.{i}.{k}_variance" for i in range(2) for k in ("weight", "bias"))
    assert hierarchical.gibbs_sites == hierarchical.prior.gibbs_sites == expected
    assert gaussian.gibbs_sites == () and gaussian.gibbs_update({}) == {}
    assert not isinstance(lambda x: x, GibbsHook)


def test_bnn_gibbs_update_is_the_priors_conditional_draw() -> None:
    """Same seed, same draws as the former BNN code: layer by layer, weight then bias, gibbs_variance."""
    bnn = BNN(2, hidden=(3,), prior=HierarchicalPrior(shape=2.0, rate=0.5)).double()
    trace = pyro.poutine.trace(bnn).get_trace(torch.randn(5, 2, dtype=DT))
    values = {name: node["value"].expand(4, *node["value"].shape) for name, node in trace.nodes.items()
              if node["type"] == "sample" and not node["is_observed"]}  # fmt: skip
    torch.manual_seed(3)
    new = bnn.gibbs_update(values)
    torch.manual_seed(3)
    for layer in range(2):
        for kind in ("weight", "bias"):
            reference = bnn.prior.gibbs_variance(layer, kind, values[f"layers.{layer}.{kind}"])
            assert torch.equal(new[f"layers.{layer}.{kind}_variance"], reference)
    assert set(new) == set(bnn.gibbs_sites) and new["layers.0.weight_variance"].shape == (4,)


class _SitesOnly:
    """Names Gibbs sites but has no gibbs_update: not a GibbsHook."""

    gibbs_sites = ("scale",)

    def __call__(self, x: torch.Tensor, y: torch.Tensor | None = None) -> None:
        scale = pyro.sample("scale", dist.HalfNormal(torch.ones((), dtype=x.dtype)))
        loc = pyro.sample("loc", dist.Normal(torch.zeros((), dtype=x.dtype), 1.0))
        with pyro.plate("data", x.shape[0]):
            pyro.sample("obs", dist.Normal(loc, scale), obs=y)


def test_sghmc_refuses_gibbs_sites_without_an_update() -> None:
    assert not isinstance(_SitesOnly(), GibbsHook)
    x = torch.zeros(10, 1, dtype=DT)
    with pytest.raises(ValueError, match="gibbs_sites but no callable gibbs_update"):
        sghmc(_SitesOnly(), x, torch.randn(10, dtype=DT), num_chains=1, num_burnin=2, num_samples=2,
              batch_size=5, progress=False, seed=0)  # fmt: skip
