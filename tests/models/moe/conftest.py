"""Tests here use small tensors: run them on one intra-op thread (see tests/_single_thread.py)."""

from tests._single_thread import single_thread

__all__ = ["single_thread"]
