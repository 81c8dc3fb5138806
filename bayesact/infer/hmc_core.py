"""The HMC and NUTS transitions, batched over chains: pure functions from state to state.

Chains are the leading dimension ``C`` of every tensor and run in lockstep: each leapfrog
step advances all chains at once, and a chain whose trajectory has stopped takes steps of
size zero (its state does not move) while the others finish. The only host synchronisations
of NUTS are the checks "has every chain stopped?" (one per pair of leaves on CPU, every
``sync_every`` leaves on other devices) and one per tree doubling.

The building blocks live in :mod:`bayesact.infer.integrator` (metric, leapfrog, U-turn) and
:mod:`bayesact.infer.nuts_tree` (leaves and doubling boundaries); they are re-exported here.

References: Hoffman & Gelman (2014), "The No-U-Turn Sampler", JMLR 15; Betancourt (2017),
"A Conceptual Introduction to Hamiltonian Monte Carlo", arXiv:1701.02434 (multinomial
sampling and the generalised U-turn criterion); NumPyro's iterative NUTS (Phan et al. 2019).
"""

from __future__ import annotations

import math
from collections.abc import Callable, Sequence
from typing import Any, NamedTuple

import torch

from bayesact.infer.integrator import (
    IntegratorState,
    Metric,
    PotentialAndGrad,
    is_numerical_failure,
    is_turning,
    kinetic_energy,
    leapfrog,
    make_metric,
    sample_momentum,
    velocity,
)
from bayesact.infer.nuts_tree import (
    NutsKernels,
    SubtreeState,
    TreeState,
    eager_kernels,
    first_nonfinite_grad,
    pair_table,
    slot_table,
    subtree_checkpoints,
    subtree_leaf,
    subtree_leaf_pair,
    subtree_start,
    tree_init,
)

__all__ = [
    "IntegratorState",
    "Metric",
    "NutsKernels",
    "SubtreeState",
    "TransitionStats",
    "TreeState",
    "find_reasonable_step_size",
    "hmc_transition",
    "is_turning",
    "kinetic_energy",
    "leapfrog",
    "make_metric",
    "nonfinite_grad_report",
    "nuts_transition",
    "sample_momentum",
    "slot_table",
    "subtree_checkpoints",
    "subtree_leaf",
    "subtree_leaf_pair",
    "velocity",
]


class TransitionStats(NamedTuple):
    """Per-chain statistics of one transition (all shaped (C,)).

    ``nonfinite_grad`` is the flat index of the first non-finite gradient component the
    transition met at a finite potential (such a step diverges), -1 if none.
    """

    energy: torch.Tensor
    energy_error: torch.Tensor
    acceptance_rate: torch.Tensor
    num_steps: torch.Tensor
    tree_depth: torch.Tensor
    diverging: torch.Tensor
    reached_max_treedepth: torch.Tensor
    nonfinite_grad: torch.Tensor


def _any(mask: torch.Tensor) -> bool:
    return bool(mask.any())


def nuts_transition(
    z: torch.Tensor,
    potential: torch.Tensor,
    grad: torch.Tensor,
    step_size: torch.Tensor,
    metric: Metric,
    potential_and_grad: PotentialAndGrad,
    generator: torch.Generator,
    max_tree_depth: int = 10,
    max_delta_energy: float = 1000.0,
    sync_every: int = 1,
    kernels: NutsKernels | None = None,
) -> tuple[tuple[torch.Tensor, torch.Tensor, torch.Tensor], TransitionStats]:
    """One NUTS transition for all chains: iterative tree doubling, multinomial sampling.

    Each doubling picks a direction per chain and builds a subtree of 2^j leapfrog steps
    from that end of the trajectory. Within a subtree the proposal is drawn progressively
    in proportion to exp(-H) (multinomial); the subtree's proposal then replaces the tree's
    with probability min(1, W_subtree / W_tree) (biased progressive sampling, Betancourt
    2017). A chain stops at a U-turn of any complete sub-subtree or of the whole tree, at a
    divergence (H - H₀ > ``max_delta_energy`` or NaN), or at ``max_tree_depth`` doublings.
    Subtrees of two or more leaves are built a pair of leaves at a time.

    Args:
        z: current position (C, D).
        potential: U(z) (C,).
        grad: ∇U(z) (C, D).
        step_size: per-chain step size (C,).
        metric: the mass matrix.
        potential_and_grad: batched ``z -> (U, ∇U)`` (used by the default eager kernels).
        generator: the random stream.
        max_tree_depth: maximum number of doublings (at most 2^depth - 1 leapfrog steps).
        max_delta_energy: energy error above which a trajectory counts as divergent.
        sync_every: leaves between checks that every chain's subtree has stopped.
        kernels: the leaf, pair and doubling-boundary steps (default:
            :func:`~bayesact.infer.nuts_tree.eager_kernels`; the sampler passes compiled ones).
            A compiled leaf or pair that raises a numerical failure (see
            :func:`~bayesact.infer.integrator.is_numerical_failure`) is redone by the eager
            step, whose ``potential_and_grad`` turns the failure into a divergence.

    Returns:
        ((z, U, ∇U) of the new state, TransitionStats).
    """
    num_chains, dim = z.shape
    device, dtype = z.device, z.dtype
    eager = eager_kernels(potential_and_grad, max_delta_energy)
    if kernels is None:
        kernels = eager
    leaf, pair = _guarded(kernels.leaf, eager.leaf), _guarded(kernels.pair, eager.pair)
    slots = max(max_tree_depth, 1)
    leaf_rows, pair_rows = slot_table(slots, device), pair_table(slots, device)
    pair_sync = max(1, sync_every // 2)
    r0 = sample_momentum(metric, generator)
    v0 = velocity(metric, r0)
    energy0 = potential + 0.5 * (r0 * v0).sum(-1)
    tree = tree_init(IntegratorState(z, r0, potential, grad), v0, energy0)
    zeros = torch.zeros(num_chains, dtype=dtype, device=device)
    ckpt = z.new_zeros(slots, num_chains, dim)
    forward = torch.rand(num_chains, generator=generator, device=device) < 0.5
    sub, signed_step = subtree_start(tree, forward, step_size, energy0, zeros, zeros.clone(), ckpt,
                                     ckpt.clone())
    log_u = torch.rand(2, num_chains, generator=generator, device=device, dtype=dtype).log()
    inverse_mass = metric.inverse_mass
    for j in range(max_tree_depth):
        num_leaves = 1 << j
        active = tree.active
        if num_leaves == 1:
            store, check = leaf_rows[0]
            sub, alive = leaf(sub, active, signed_step, inverse_mass, energy0, log_u[0],
                                      store, check)
        else:
            num_pairs = num_leaves // 2
            for k in range(num_pairs):
                store, check = pair_rows[k]
                sub, alive = pair(sub, active, signed_step, inverse_mass, energy0,
                                          log_u[2 * k : 2 * k + 2], store, check)
                if k + 1 < num_pairs and (k + 1) % pair_sync == 0 and not _any(alive):
                    break
        last = j + 1 == max_tree_depth
        if last:
            next_forward = forward
        else:
            # the next direction is drawn before the merge (one fused boundary step); when no
            # chain goes on, the draw is undone so the stream only holds directions used
            stream = generator.get_state()
            next_forward = torch.rand(num_chains, generator=generator, device=device) < 0.5
        tree, sub, signed_step = kernels.merge(tree, sub, forward, log_u[num_leaves], next_forward,
                                               step_size, energy0)
        if last:
            break
        if not _any(tree.active):
            generator.set_state(stream)
            break
        forward = next_forward
        log_u = torch.rand(2 * num_leaves + 1, num_chains, generator=generator, device=device,
                           dtype=dtype).log()

    stats = TransitionStats(
        energy=tree.proposal_energy,
        energy_error=tree.proposal_energy - energy0,
        acceptance_rate=sub.accept_sum / sub.num_steps.clamp(min=1.0),
        num_steps=sub.num_steps.long(),
        tree_depth=tree.depth,
        diverging=tree.diverging,
        reached_max_treedepth=tree.active & (tree.depth >= max_tree_depth),
        nonfinite_grad=sub.nonfinite_grad,
    )
    return (tree.proposal_z, tree.proposal_potential, tree.proposal_grad), stats


def hmc_transition(
    z: torch.Tensor,
    potential: torch.Tensor,
    grad: torch.Tensor,
    step_size: torch.Tensor,
    metric: Metric,
    potential_and_grad: PotentialAndGrad,
    generator: torch.Generator,
    num_steps: torch.Tensor,
    max_delta_energy: float = 1000.0,
) -> tuple[tuple[torch.Tensor, torch.Tensor, torch.Tensor], TransitionStats]:
    """One HMC transition: ``num_steps`` (C,) leapfrog steps, then a Metropolis test.

    The proposal is accepted with probability min(1, exp(H₀ - H₁)) (Duane et al. 1987;
    Neal 2011). Chains with fewer steps stop early (step size zero) while others finish. A
    chain whose potential or gradient turns non-finite is rejected (a divergence) and takes
    its remaining zero steps from the start, so a point where the potential raised is not
    evaluated again.
    """
    num_chains = z.shape[0]
    dtype = z.dtype
    r0 = sample_momentum(metric, generator)
    energy0 = potential + kinetic_energy(metric, r0)
    state = IntegratorState(z, r0, potential, grad)
    failed = torch.zeros(num_chains, dtype=torch.bool, device=z.device)
    nonfinite = torch.full((num_chains,), -1, dtype=torch.long, device=z.device)
    max_steps = int(num_steps.max())
    for i in range(max_steps):
        moving = (num_steps > i) & ~failed
        f2 = failed[:, None]
        start = IntegratorState(torch.where(f2, z, state.z), torch.where(f2, r0, state.r), state.potential,
                                torch.where(f2, grad, state.grad))
        state = leapfrog(start, step_size[:, None] * moving.to(dtype)[:, None], metric, potential_and_grad)
        nonfinite = first_nonfinite_grad(state.potential, state.grad, moving, nonfinite)
        failed = failed | (moving & ~(torch.isfinite(state.potential) & torch.isfinite(state.grad).all(-1)))
    energy1 = state.potential + kinetic_energy(metric, state.r)
    delta = torch.where(failed, math.inf, torch.nan_to_num(energy1 - energy0, nan=math.inf))
    accept_prob = torch.exp(-delta).clamp(max=1.0)
    u = torch.rand(num_chains, generator=generator, device=z.device, dtype=dtype)
    accept = u < accept_prob
    new_z = torch.where(accept[:, None], state.z, z)
    new_u = torch.where(accept, state.potential, potential)
    new_g = torch.where(accept[:, None], state.grad, grad)
    zeros = torch.zeros(num_chains, dtype=torch.long, device=z.device)
    stats = TransitionStats(
        energy=torch.where(accept, energy1, energy0),
        energy_error=delta,
        acceptance_rate=accept_prob,
        num_steps=num_steps.to(torch.long).expand(num_chains),
        tree_depth=zeros,
        diverging=delta > max_delta_energy,
        reached_max_treedepth=zeros.bool(),
        nonfinite_grad=nonfinite,
    )
    return (new_z, new_u, new_g), stats


def _guarded(kernel: Callable[..., Any], eager: Callable[..., Any]) -> Callable[..., Any]:
    """``kernel``, redone by ``eager`` when it raises a numerical failure (a compiled leaf that
    inlines the potential cannot turn it into a divergence itself; the eager step can)."""
    if kernel is eager:
        return kernel

    def call(*args: Any) -> Any:
        try:
            return kernel(*args)
        except Exception as exc:  # re-raised below unless numerical
            if not is_numerical_failure(exc):
                raise
        return eager(*args)

    return call


def nonfinite_grad_report(index: torch.Tensor, sites: Sequence[Any]) -> tuple[int, dict[str, int]]:
    """Count the transitions of ``index`` (any shape; TransitionStats.nonfinite_grad values)
    that met a non-finite gradient, and how many of them per latent site, mapping the flat
    index to the site through its ``offset`` and ``size`` (:class:`~bayesact.infer.potential.LatentSite`)."""
    hits = index[index >= 0].cpu()
    per_site: dict[str, int] = {}
    for site in sites:
        n = int(((hits >= site.offset) & (hits < site.offset + site.size)).sum())
        if n:
            per_site[site.name] = n
    return int(hits.numel()), per_site


def find_reasonable_step_size(
    z: torch.Tensor,
    potential: torch.Tensor,
    grad: torch.Tensor,
    step_size: torch.Tensor,
    metric: Metric,
    potential_and_grad: PotentialAndGrad,
    generator: torch.Generator,
    target: float = 0.8,
    max_iter: int = 100,
) -> torch.Tensor:
    """Per-chain heuristic initial step size (Hoffman & Gelman 2014, Alg. 4; Stan's version).

    From ``step_size``, double (or halve) ε until the one-step acceptance exp(H₀ - H₁)
    crosses ``target``; each trial draws a fresh momentum.
    """
    log_target = math.log(target)
    eps = step_size.clone()
    direction = None
    done = torch.zeros(z.shape[0], dtype=torch.bool, device=z.device)
    for _ in range(max_iter):
        r = sample_momentum(metric, generator)
        energy0 = potential + kinetic_energy(metric, r)
        new = leapfrog(IntegratorState(z, r, potential, grad), eps[:, None], metric, potential_and_grad)
        energy1 = new.potential + kinetic_energy(metric, new.r)
        log_accept = torch.nan_to_num(energy0 - energy1, nan=-math.inf)
        if direction is None:
            direction = torch.where(log_accept > log_target, 1.0, -1.0).to(eps.dtype)
        up = direction > 0
        stop = (up & ~(log_accept > log_target)) | (~up & ~(log_accept < log_target))
        stop = stop | (eps > 1e7) | (eps < 1e-7)
        done = done | stop
        if bool(done.all()):
            break
        eps = torch.where(done, eps, eps * torch.pow(2.0, direction))
    return eps
