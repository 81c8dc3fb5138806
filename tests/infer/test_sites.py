"""Typed reads of Pyro trace sites (bayesact.infer.sites)."""

from __future__ import annotations

import pyro
import pyro.distributions as dist
import pytest
import torch
from pyro import poutine

from bayesact.infer.sites import is_deterministic, site_dist, site_value


def model() -> None:
    z = pyro.sample("z", dist.Normal(0.0, 1.0))
    pyro.deterministic("twice", 2 * z)
    pyro.sample("y", dist.Normal(z, 1.0), obs=torch.tensor(0.5))


def test_sites_read_value_distribution_and_deterministic_flag() -> None:
    tr = poutine.trace(model).get_trace()
    z, twice, y = tr.nodes["z"], tr.nodes["twice"], tr.nodes["y"]
    assert not is_deterministic(z) and is_deterministic(twice) and not is_deterministic(y)
    assert site_value(twice) == 2 * site_value(z)
    expected = dist.Normal(site_value(z), 1.0).log_prob(torch.tensor(0.5))
    torch.testing.assert_close(site_dist(y).log_prob(site_value(y)), expected)


def test_a_site_without_value_or_infer_dict() -> None:
    site = {"type": "sample", "name": "w", "value": None}
    assert not is_deterministic(site)  # no infer dict: not deterministic
    with pytest.raises(ValueError, match="site 'w' has no value"):
        site_value(site)
