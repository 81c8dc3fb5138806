"""An autouse fixture for test packages of small-tensor work: one intra-op thread.

Two OpenMP threads on a shared 2-core machine wait on each other for every small op (measured:
51 ms vs 2.7 ms per gradient of a test model; 100 ms vs 28 ms per critic step). Import it into a
package's conftest.py to apply it there.
"""

from __future__ import annotations

from collections.abc import Iterator

import pytest
import torch


@pytest.fixture(autouse=True)
def single_thread() -> Iterator[None]:
    threads = torch.get_num_threads()
    torch.set_num_threads(1)
    yield
    torch.set_num_threads(threads)
