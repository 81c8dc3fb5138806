"""Shared pytest configuration: GPU tests skip cleanly without CUDA; no compiled packages
(``BAYESACT_PACKAGES=0``: a package built by an earlier ``make demo`` would change which path
a test's sampler runs; the package tests turn them on in a temporary cache)."""

from __future__ import annotations

import os

import pytest
import torch

os.environ["BAYESACT_PACKAGES"] = "0"


def pytest_collection_modifyitems(config: pytest.Config, items: list[pytest.Item]) -> None:
    if torch.cuda.is_available():
        return
    skip_gpu = pytest.mark.skip(reason="needs a CUDA device")
    for item in items:
        if "gpu" in item.keywords:
            item.add_marker(skip_gpu)


@pytest.fixture(autouse=True)
def _seed() -> None:
    torch.manual_seed(0)
