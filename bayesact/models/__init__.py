"""Pyro models: Bayesian neural networks (more models arrive with later issues)."""

from .bnn import BNN

__all__ = ["BNN"]
