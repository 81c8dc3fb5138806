"""Typed reads of Pyro trace sites: Pyro's ``Message`` types ``infer``, ``value`` and ``fn`` loosely
(optional dict, optional tensor, any callable); a sample site of a finished trace has all three."""

from __future__ import annotations

from typing import Any, cast

from pyro.distributions.torch_distribution import TorchDistributionMixin
from pyro.poutine.runtime import InferDict, Message
from torch import Tensor

__all__ = ["is_deterministic", "site_dist", "site_infer", "site_value"]

Site = Message[Any, Any]


def site_infer(site: Site) -> InferDict:
    """The site's ``infer`` dict (empty where the site has none)."""
    return site.get("infer") or {}


def is_deterministic(site: Site) -> bool:
    """Whether the site was recorded by ``pyro.deterministic``."""
    return bool(site_infer(site).get("_deterministic", False))


def site_value(site: Site) -> Tensor:
    """The value of a sample site of a finished trace."""
    value = site["value"]
    if value is None:
        raise ValueError(f"site {site.get('name')!r} has no value (a trace of a model that has run has one)")
    return value


def site_dist(site: Site) -> TorchDistributionMixin:
    """The distribution of a sample site (Pyro types ``fn`` as any callable)."""
    return cast(TorchDistributionMixin, site["fn"])
