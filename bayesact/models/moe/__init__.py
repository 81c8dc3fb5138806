"""Mixtures of experts: Gaussian experts behind a gate π(x) on the simplex (issue 15).

p(y | x) = Σ_k π_k(x) N(y; a_kᵀx + b_k, σ_k²). The gates live in :mod:`bayesact.models.moe.gates`.
"""
