"""Pure, shape-static pieces of iterative NUTS tree building, batched over chains.

A NUTS transition (see :func:`bayesact.infer.hmc_core.nuts_transition`) alternates two kinds of
step, each a pure function of tensors so that it can be compiled as one graph:

- a *leaf*: one leapfrog step added to every chain's current subtree, with progressive
  multinomial sampling and the U-turn checks against the checkpoint slots
  (:func:`subtree_leaf`, or :func:`subtree_leaf_pair` for an even leaf and the odd leaf after it);
- a *doubling boundary*: the finished subtree is merged into the tree (biased progressive
  sampling, the U-turn check of the whole tree) and the next subtree starts from the end of
  the tree chosen by a fresh direction (:func:`merge_and_start`).

References: Hoffman & Gelman (2014), "The No-U-Turn Sampler", JMLR 15; Betancourt (2017),
arXiv:1701.02434 (multinomial sampling, generalised U-turn); NumPyro's iterative NUTS
(Phan, Pradhan & Jankowiak 2019) for the checkpoint-slot scheme.
"""

from __future__ import annotations

import functools
import math
from collections.abc import Callable
from typing import Any, NamedTuple

import torch

from bayesact.infer.integrator import (
    IntegratorState,
    Metric,
    PotentialAndGrad,
    is_turning,
    leapfrog,
    velocity,
)

__all__ = [
    "NutsKernels",
    "SubtreeState",
    "TreeState",
    "eager_kernels",
    "first_nonfinite_grad",
    "merge_and_start",
    "pair_table",
    "slot_table",
    "subtree_checkpoints",
    "subtree_leaf",
    "subtree_leaf_pair",
    "subtree_start",
    "tree_init",
    "tree_merge",
]


def subtree_checkpoints(leaf: int) -> tuple[int, int]:
    """Checkpoint slots used at ``leaf`` of an iteratively built subtree.

    An even leaf stores its velocity and the momentum sum before it in slot ``hi``. An odd
    leaf with t trailing one-bits closes t complete sub-subtrees of sizes 2, 4, ..., 2ᵗ whose
    first leaves sit in slots ``lo..hi`` (popcount of the first leaf's index), so it checks
    the U-turn criterion against each of them. Returns (lo, hi); for even leaves lo = hi.
    """
    hi = bin(leaf >> 1).count("1")
    if leaf % 2 == 0:
        return hi, hi
    trailing = (~leaf & (leaf + 1)).bit_length() - 1
    return hi - trailing + 1, hi


class SubtreeState(NamedTuple):
    """Accumulators of a subtree under construction (C chains, K checkpoint slots).

    The current leaf (``z``, ``r``, ``potential``, ``grad``, velocity ``v``), the log of the
    subtree's total weight Σ exp(H₀ - H), its multinomial proposal, the momentum sum, the
    stop flags, the acceptance sum and step count for adaptation, the checkpoint slots
    (velocity and momentum sum before the leaf) used by the iterative U-turn checks, and
    ``nonfinite_grad``: the flat index of the first non-finite gradient component met at a
    finite potential during the transition (-1 if none; long, carried over like the counts).
    """

    z: torch.Tensor
    r: torch.Tensor
    potential: torch.Tensor
    grad: torch.Tensor
    v: torch.Tensor
    log_weight: torch.Tensor
    proposal_z: torch.Tensor
    proposal_potential: torch.Tensor
    proposal_grad: torch.Tensor
    proposal_energy: torch.Tensor
    r_sum: torch.Tensor
    turning: torch.Tensor
    diverging: torch.Tensor
    accept_sum: torch.Tensor
    num_steps: torch.Tensor
    ckpt_v: torch.Tensor
    ckpt_rsum: torch.Tensor
    nonfinite_grad: torch.Tensor


class TreeState(NamedTuple):
    """The whole trajectory of a transition so far: both ends (position, momentum, potential,
    gradient, velocity), the multinomial proposal and its energy, the log total weight, the
    momentum sum, the depth reached, and the flags ``diverging`` and ``active`` (still doubling).
    """

    left_z: torch.Tensor
    left_r: torch.Tensor
    left_potential: torch.Tensor
    left_grad: torch.Tensor
    left_v: torch.Tensor
    right_z: torch.Tensor
    right_r: torch.Tensor
    right_potential: torch.Tensor
    right_grad: torch.Tensor
    right_v: torch.Tensor
    proposal_z: torch.Tensor
    proposal_potential: torch.Tensor
    proposal_grad: torch.Tensor
    proposal_energy: torch.Tensor
    log_weight: torch.Tensor
    r_sum: torch.Tensor
    depth: torch.Tensor
    diverging: torch.Tensor
    active: torch.Tensor


# ------------------------------------------------------------------------------------------
# leaves
# ------------------------------------------------------------------------------------------
def subtree_leaf(
    sub: SubtreeState,
    active: torch.Tensor,
    signed_step: torch.Tensor,
    inverse_mass: torch.Tensor,
    energy0: torch.Tensor,
    log_u: torch.Tensor,
    store_slot: torch.Tensor,
    check_slots: torch.Tensor,
    potential_and_grad: PotentialAndGrad,
    max_delta_energy: float,
) -> tuple[SubtreeState, torch.Tensor]:
    """Add one leapfrog leaf to every chain's subtree (a pure, shape-static step).

    Chains that are not ``active`` or whose subtree already stopped take a zero step and
    keep their accumulators; their zero step starts from the subtree's proposal (a point whose
    potential and gradient are finite) with zero momentum, so a chain stopped at a point where
    the potential raised or is NaN does not evaluate it again. Their leaf values are never
    used. ``store_slot`` (K,) marks the slot where an even leaf stores
    its checkpoint; ``check_slots`` (K,) the slots an odd leaf checks for a U-turn (see
    :func:`subtree_checkpoints`). Returns the new subtree and the chains still alive.
    """
    alive = active & ~(sub.turning | sub.diverging)
    return _leaf(sub, alive, active, signed_step, inverse_mass, energy0, log_u, store_slot, check_slots,
                 potential_and_grad, max_delta_energy, store=True, check=True)


def _leaf(
    sub: SubtreeState,
    alive: torch.Tensor,
    active: torch.Tensor,
    signed_step: torch.Tensor,
    inverse_mass: torch.Tensor,
    energy0: torch.Tensor,
    log_u: torch.Tensor,
    store_slot: torch.Tensor,
    check_slots: torch.Tensor,
    potential_and_grad: PotentialAndGrad,
    max_delta_energy: float,
    *,
    store: bool,
    check: bool,
) -> tuple[SubtreeState, torch.Tensor]:
    """:func:`subtree_leaf` given ``alive`` (= active & not stopped); ``store=False`` skips the
    checkpoint store (an odd leaf: ``store_slot`` is all False), ``check=False`` the U-turn checks
    (an even leaf: ``check_slots`` is all False). Each operation here runs once per leaf on tiny
    tensors, so the count of operations is the cost: negations, finiteness tests and masks are
    computed once."""
    metric = Metric(inverse_mass, inverse_mass)
    alive_f = alive.to(sub.z.dtype)
    alive2 = alive[:, None]
    state = leapfrog(
        IntegratorState(
            torch.where(alive2, sub.z, sub.proposal_z),
            torch.where(alive2, sub.r, 0.0),
            sub.potential,
            torch.where(alive2, sub.grad, 0.0),
        ),
        signed_step * alive_f[:, None],
        metric,
        potential_and_grad,
    )
    nonfinite_grad = first_nonfinite_grad(state.potential, state.grad, alive, sub.nonfinite_grad)
    v = velocity(metric, state.r)
    energy = state.potential.add((state.r * v).sum(-1), alpha=0.5)
    neg_delta = torch.nan_to_num(energy0 - energy, nan=-math.inf)
    diverging = sub.diverging | (alive & (neg_delta < -max_delta_energy))
    accept_sum = torch.addcmul(sub.accept_sum, neg_delta.clamp(max=0.0).exp(), alive_f)
    num_steps = sub.num_steps + alive_f
    # progressive multinomial sampling inside the subtree: keep this leaf w.p. w_leaf / W
    log_weight = torch.logaddexp(sub.log_weight, neg_delta)
    take = alive & (log_u < neg_delta - log_weight)
    take2 = take[:, None]
    log_weight = torch.where(alive, log_weight, sub.log_weight)
    # checkpoints and U-turn checks against every complete sub-subtree ending here
    ckpt_v, ckpt_rsum = sub.ckpt_v, sub.ckpt_rsum
    if store:
        slot = store_slot[:, None, None]
        ckpt_v = torch.where(slot, v, ckpt_v)
        ckpt_rsum = torch.where(slot, sub.r_sum, ckpt_rsum)
    r_sum = torch.addcmul(sub.r_sum, alive_f[:, None], state.r)
    turning = sub.turning
    if check:
        rho = r_sum - ckpt_rsum
        turned = ((ckpt_v * rho).sum(-1) <= 0) | ((v * rho).sum(-1) <= 0)
        turning = turning | (alive & (turned & check_slots[:, None]).any(0))
    new = SubtreeState(
        state.z,
        state.r,
        state.potential,
        state.grad,
        v,
        log_weight,
        torch.where(take2, state.z, sub.proposal_z),
        torch.where(take, state.potential, sub.proposal_potential),
        torch.where(take2, state.grad, sub.proposal_grad),
        torch.where(take, energy, sub.proposal_energy),
        r_sum,
        turning,
        diverging,
        accept_sum,
        num_steps,
        ckpt_v,
        ckpt_rsum,
        nonfinite_grad,
    )
    return new, active & ~(turning | diverging)


def first_nonfinite_grad(
    potential: torch.Tensor, grad: torch.Tensor, moving: torch.Tensor, seen: torch.Tensor
) -> torch.Tensor:
    """``seen`` (C,) updated with the flat index of the first non-finite component of ``grad``
    (C, D) for the ``moving`` chains whose ``potential`` is finite and that have none yet
    (-1: none). A non-finite gradient at a finite density makes the step diverge; the index
    lets the sampler name the site (see :func:`bayesact.infer.hmc_core.nonfinite_grad_report`).
    (x·0 is NaN exactly where x is not finite; ``max`` over a row returns the first maximum.)"""
    any_bad, first_bad = torch.isnan(grad * 0).max(-1)
    hit = moving & any_bad & (potential * 0 == 0) & (seen < 0)
    return torch.where(hit, first_bad, seen)


def subtree_leaf_pair(
    sub: SubtreeState,
    active: torch.Tensor,
    signed_step: torch.Tensor,
    inverse_mass: torch.Tensor,
    energy0: torch.Tensor,
    log_u: torch.Tensor,
    store_slots: torch.Tensor,
    check_slots: torch.Tensor,
    potential_and_grad: PotentialAndGrad,
    max_delta_energy: float,
) -> tuple[SubtreeState, torch.Tensor]:
    """Leaves 2k and 2k + 1 of a subtree in one call: two :func:`subtree_leaf` steps.

    A U-turn can only stop a subtree at an odd leaf, so pairing an even leaf with the odd
    one after it wastes no gradient except after a divergence at the even leaf (the second
    step is then a zero step for that chain). ``log_u`` is (2, C), ``store_slots`` and
    ``check_slots`` are (2, K): the rows of the two leaves. The even leaf only stores its
    checkpoint and the odd leaf only checks (their other rows are all False).
    """
    alive = active & ~(sub.turning | sub.diverging)
    sub, alive = _leaf(sub, alive, active, signed_step, inverse_mass, energy0, log_u[0], store_slots[0],
                       check_slots[0], potential_and_grad, max_delta_energy, store=True, check=False)
    return _leaf(sub, alive, active, signed_step, inverse_mass, energy0, log_u[1], store_slots[1],
                 check_slots[1], potential_and_grad, max_delta_energy, store=False, check=True)


def _slot_masks(leaf: int, slots: int) -> tuple[torch.Tensor, torch.Tensor]:
    lo, hi = subtree_checkpoints(leaf)
    store = torch.zeros(slots, dtype=torch.bool)
    check = torch.zeros(slots, dtype=torch.bool)
    if leaf % 2 == 0:
        store[hi] = True
    else:
        check[lo : hi + 1] = True
    return store, check


class SlotTable:
    """Cached per-leaf checkpoint masks (store (K,), check (K,)) for a device and slot count;
    with ``pairs=True`` the rows of leaves 2k and 2k + 1 stacked ((2, K) each), indexed by k."""

    def __init__(self, slots: int, device: torch.device, pairs: bool = False) -> None:
        self.slots = slots
        self.device = device
        self.pairs = pairs
        self._rows: list[tuple[torch.Tensor, torch.Tensor]] = []

    def _row(self, index: int) -> tuple[torch.Tensor, torch.Tensor]:
        if not self.pairs:
            store, check = _slot_masks(index, self.slots)
        else:
            (s0, c0), (s1, c1) = _slot_masks(2 * index, self.slots), _slot_masks(2 * index + 1, self.slots)
            store, check = torch.stack([s0, s1]), torch.stack([c0, c1])
        return store.to(self.device), check.to(self.device)

    def __getitem__(self, index: int) -> tuple[torch.Tensor, torch.Tensor]:
        while len(self._rows) <= index:
            self._rows.append(self._row(len(self._rows)))
        return self._rows[index]


_TABLES: dict[tuple[int, str, bool], SlotTable] = {}


def slot_table(slots: int, device: torch.device) -> SlotTable:
    """The shared per-leaf :class:`SlotTable` for ``slots`` checkpoint slots on ``device``."""
    key = (slots, str(device), False)
    if key not in _TABLES:
        _TABLES[key] = SlotTable(slots, device)
    return _TABLES[key]


def pair_table(slots: int, device: torch.device) -> SlotTable:
    """The shared per-pair :class:`SlotTable` (rows of leaves 2k, 2k + 1) on ``device``."""
    key = (slots, str(device), True)
    if key not in _TABLES:
        _TABLES[key] = SlotTable(slots, device, pairs=True)
    return _TABLES[key]


# ------------------------------------------------------------------------------------------
# doubling boundaries
# ------------------------------------------------------------------------------------------
def tree_init(start: IntegratorState, v0: torch.Tensor, energy0: torch.Tensor) -> TreeState:
    """A one-point tree at ``start`` (momentum drawn, velocity ``v0``, energy ``energy0``)."""
    c = start.z.shape[0]
    device = start.z.device
    return TreeState(
        *start, v0, *start, v0,
        start.z, start.potential, start.grad, energy0,
        torch.zeros_like(energy0), start.r,
        torch.zeros(c, dtype=torch.long, device=device),
        torch.zeros(c, dtype=torch.bool, device=device),
        torch.ones(c, dtype=torch.bool, device=device),
    )


def subtree_start(
    tree: TreeState,
    forward: torch.Tensor,
    step_size: torch.Tensor,
    energy0: torch.Tensor,
    accept_sum: torch.Tensor,
    num_steps: torch.Tensor,
    ckpt_v: torch.Tensor,
    ckpt_rsum: torch.Tensor,
    nonfinite_grad: torch.Tensor | None = None,
) -> tuple[SubtreeState, torch.Tensor]:
    """An empty subtree at the end of ``tree`` in direction ``forward`` (C,) and the signed
    step size (C, 1). ``accept_sum``, ``num_steps``, the checkpoint buffers and
    ``nonfinite_grad`` (default: none, -1) carry over."""
    if nonfinite_grad is None:
        nonfinite_grad = torch.full(forward.shape, -1, dtype=torch.long, device=forward.device)
    f = forward[:, None]

    def end(right: torch.Tensor, left: torch.Tensor) -> torch.Tensor:
        return torch.where(f if right.dim() == 2 else forward, right, left)

    z = end(tree.right_z, tree.left_z)
    potential = end(tree.right_potential, tree.left_potential)
    grad = end(tree.right_grad, tree.left_grad)
    sub = SubtreeState(
        z, end(tree.right_r, tree.left_r), potential, grad, end(tree.right_v, tree.left_v),
        torch.full_like(energy0, -math.inf), z, potential, grad, energy0,
        torch.zeros_like(z),
        torch.zeros_like(forward), torch.zeros_like(forward),
        accept_sum, num_steps, ckpt_v, ckpt_rsum, nonfinite_grad,
    )
    signed_step = (step_size * (forward.to(step_size.dtype) * 2 - 1))[:, None]
    return sub, signed_step


def tree_merge(
    tree: TreeState, sub: SubtreeState, forward: torch.Tensor, log_u: torch.Tensor
) -> TreeState:
    """Merge a finished subtree into the tree, for the chains that were still doubling.

    The subtree's proposal replaces the tree's with probability min(1, W_sub / W_tree)
    (biased progressive sampling, Betancourt 2017); the tree grows at the end ``forward``
    points to; the chain stops at a U-turn of the whole tree or a divergence.
    """
    ok = tree.active & ~sub.turning & ~sub.diverging
    take = ok & (log_u < sub.log_weight - tree.log_weight)
    take2 = take[:, None]
    grow_right = ok & forward
    grow_left = ok & ~forward
    gr2, gl2 = grow_right[:, None], grow_left[:, None]
    left_v = torch.where(gl2, sub.v, tree.left_v)
    right_v = torch.where(gr2, sub.v, tree.right_v)
    r_sum = torch.where(ok[:, None], tree.r_sum + sub.r_sum, tree.r_sum)
    turning = is_turning(left_v, right_v, r_sum)
    return TreeState(
        torch.where(gl2, sub.z, tree.left_z),
        torch.where(gl2, sub.r, tree.left_r),
        torch.where(grow_left, sub.potential, tree.left_potential),
        torch.where(gl2, sub.grad, tree.left_grad),
        left_v,
        torch.where(gr2, sub.z, tree.right_z),
        torch.where(gr2, sub.r, tree.right_r),
        torch.where(grow_right, sub.potential, tree.right_potential),
        torch.where(gr2, sub.grad, tree.right_grad),
        right_v,
        torch.where(take2, sub.proposal_z, tree.proposal_z),
        torch.where(take, sub.proposal_potential, tree.proposal_potential),
        torch.where(take2, sub.proposal_grad, tree.proposal_grad),
        torch.where(take, sub.proposal_energy, tree.proposal_energy),
        torch.where(ok, torch.logaddexp(tree.log_weight, sub.log_weight), tree.log_weight),
        r_sum,
        tree.depth + tree.active.long(),
        tree.diverging | (tree.active & sub.diverging),
        ok & ~turning,
    )


def merge_and_start(
    tree: TreeState,
    sub: SubtreeState,
    forward: torch.Tensor,
    log_u: torch.Tensor,
    next_forward: torch.Tensor,
    step_size: torch.Tensor,
    energy0: torch.Tensor,
) -> tuple[TreeState, SubtreeState, torch.Tensor]:
    """One doubling boundary: :func:`tree_merge`, then :func:`subtree_start` of the next
    subtree in direction ``next_forward``. Returns (tree, next subtree, its signed step)."""
    tree = tree_merge(tree, sub, forward, log_u)
    nxt, signed_step = subtree_start(
        tree, next_forward, step_size, energy0, sub.accept_sum, sub.num_steps, sub.ckpt_v,
        sub.ckpt_rsum, sub.nonfinite_grad,
    )
    return tree, nxt, signed_step


# ------------------------------------------------------------------------------------------
# the kernels a transition calls
# ------------------------------------------------------------------------------------------
class NutsKernels(NamedTuple):
    """The three steps of a NUTS transition, eager or compiled.

    ``leaf(sub, active, signed_step, inverse_mass, energy0, log_u, store, check)`` and
    ``pair(...)`` (same arguments with two rows each) return (subtree, alive);
    ``merge(tree, sub, forward, log_u, next_forward, step_size, energy0)`` returns
    (tree, next subtree, signed step).
    """

    leaf: Callable[..., tuple[SubtreeState, torch.Tensor]]
    pair: Callable[..., tuple[SubtreeState, torch.Tensor]]
    merge: Callable[..., tuple[TreeState, SubtreeState, torch.Tensor]]


def eager_kernels(potential_and_grad: PotentialAndGrad, max_delta_energy: float) -> NutsKernels:
    """:class:`NutsKernels` of the pure functions above, calling ``potential_and_grad``."""
    opts: dict[str, Any] = {"potential_and_grad": potential_and_grad, "max_delta_energy": max_delta_energy}
    return NutsKernels(
        functools.partial(subtree_leaf, **opts),
        functools.partial(subtree_leaf_pair, **opts),
        merge_and_start,
    )
