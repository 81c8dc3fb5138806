"""Potential energy of a Pyro model on a flat unconstrained vector, batched over chains.

The model is traced once to find its latent sites, their shapes and Pyro's bijections
``biject_to(support)``. The potential of one flat vector ``z`` is

    U(z) = -[log p(T(z), y) + log |det J_T(z)|],

the negative log joint of the constrained values ``T(z)`` plus the log-Jacobian of the
transforms (the change of variables used by Stan and Pyro, Carpenter et al. 2017).
Chains are a leading batch dimension: ``torch.func.vmap`` of the potential evaluates all of
them in one call, and autograd of the chains' sum gives each chain's gradient. The vmapped
gradient is captured once as a graph of ATen operations
(``torch.fx.experimental.proxy_tensor.make_fx``), so Pyro's effect handlers run once instead
of at every leapfrog step (the graph is then simplified, see
:mod:`bayesact.infer.graph_passes`); the capture is checked against the eager
gradient and the engine falls back to plain ``vmap`` (or a per-chain loop) when it differs.

For minibatch samplers (SGHMC) some positional model arguments are *data inputs*: the
potential takes them as explicit arguments (inputs of the captured graph, so one graph serves
every minibatch of the same size), and the log-likelihood of the minibatched observed sites
is scaled by ``likelihood_scale`` = N/B, an unbiased estimate of the full-data potential.
"""

from __future__ import annotations

import contextlib
import math
import warnings
from collections.abc import Callable, Iterator
from dataclasses import dataclass
from typing import Any

import pyro
import pyro.poutine as poutine
import torch
from pyro.distributions.transforms import biject_to
from pyro.poutine.messenger import Messenger
from pyro.poutine.runtime import Message
from torch.distributions.transforms import Transform

from bayesact import compilation
from bayesact.compilation import outputs_close
from bayesact.infer.compiled import CompiledFunction, CompileFailed, detach_constants
from bayesact.infer.graph_passes import simplify
from bayesact.infer.integrator import is_numerical_failure
from bayesact.infer.phases import warn_user
from bayesact.infer.sites import is_deterministic, site_dist, site_value

__all__ = ["LatentSite", "Potential", "build_potential", "trace_model"]

PotentialAndGrad = Callable[..., tuple[torch.Tensor, torch.Tensor]]


@dataclass(frozen=True)
class LatentSite:
    """One latent sample site: where it lives in the flat vector and how it is constrained."""

    name: str
    shape: torch.Size
    unconstrained_shape: torch.Size
    transform: Transform
    offset: int
    size: int


@contextlib.contextmanager
def _model_context(dtype: torch.dtype | None) -> Iterator[None]:
    """Run model code without Pyro validation and with ``dtype`` as default float type."""
    old = torch.get_default_dtype()
    try:
        if dtype is not None and dtype.is_floating_point:
            torch.set_default_dtype(dtype)
        with pyro.validation_enabled(False), warnings.catch_warnings():
            warnings.simplefilter("ignore", category=UserWarning)
            yield
    finally:
        torch.set_default_dtype(old)


class _ScaleSites(Messenger):
    """Multiply the log-density of the sample sites in ``names`` by ``factor``."""

    def __init__(self, names: frozenset[str], factor: float) -> None:
        super().__init__()
        self.names = names
        self.factor = factor

    def _process_message(self, msg: Message[Any, Any]) -> None:
        if msg["type"] == "sample" and msg["name"] in self.names:
            msg["scale"] = self.factor * msg["scale"]


def trace_model(model: Callable[..., Any], args: tuple, kwargs: dict) -> poutine.Trace:
    """Trace ``model(*args, **kwargs)`` once, drawing latent values from the prior (redrawn up to
    9 times where the model raises a numerical failure, e.g. a Cholesky of a non-PD matrix)."""
    if not callable(model):
        raise ValueError(f"model must be a callable Pyro model, got {type(model).__name__}")
    with pyro.validation_enabled(False), torch.no_grad():
        for attempt in range(10):
            try:
                tr = poutine.trace(model).get_trace(*args, **kwargs)
                break
            except Exception as exc:  # the user's model failed: say so with the original error
                if attempt < 9 and is_numerical_failure(exc):
                    continue
                raise ValueError(f"running the model failed while tracing it: {exc!r}") from exc
    return poutine.util.prune_subsample_sites(tr)


def _latent_sites(tr: poutine.Trace) -> tuple[list[LatentSite], dict[str, torch.Tensor]]:
    sites: list[LatentSite] = []
    observed: dict[str, torch.Tensor] = {}
    offset = 0
    for name, site in tr.nodes.items():
        if site["type"] != "sample":
            continue
        for frame in site["cond_indep_stack"]:
            full = getattr(frame, "full_size", None)
            if full is not None and full != frame.size:
                raise ValueError(
                    f"site '{name}' sits in plate '{frame.name}' subsampled to {frame.size} of "
                    f"{full}: MCMC needs the full data (remove subsample_size)"
                )
        if site["is_observed"]:
            if not is_deterministic(site):
                observed[name] = site_value(site)
            continue
        fn = site_dist(site)
        if fn.support.is_discrete:
            raise ValueError(
                f"latent site '{name}' is discrete ({type(fn).__name__}); bayesact's NUTS/HMC "
                "needs continuous latent sites: marginalise it in the model, or use "
                "engine='pyro' with enumeration (pyro.infer.config_enumerate)"
            )
        transform = biject_to(fn.support)
        value = site_value(site)
        ushape = torch.Size(transform.inverse_shape(value.shape))
        size = int(torch.Size(ushape).numel())
        sites.append(LatentSite(name, value.shape, ushape, transform, offset, size))
        offset += size
    return sites, observed


class Potential:
    """Potential energy ``U(z)`` of a Pyro model and its gradient, batched over chains.

    Args:
        model: a Pyro model (any callable whose latent sites are continuous).
        args: positional model arguments (already on the target device and dtype).
        kwargs: keyword model arguments.
        dtype: floating point type of the flat vector.
        device: device of the flat vector.
        data_positions: indices of positional arguments passed to :meth:`value_and_grad`
            as data inputs (minibatches) instead of the fixed ``args``.
        scaled_sites: observed sites whose log-likelihood is multiplied by ``likelihood_scale``.
        likelihood_scale: N/B for minibatches of B of N data points.
        batched_data: data inputs carry a leading chain dimension (one minibatch per chain).

    Attributes:
        sites: the latent sites in the order of the flat vector.
        dim: length of the flat unconstrained vector.
        observed: observed sites of the model and their values.
        mode: how ``value_and_grad`` is evaluated: ``"captured"`` (a graph captured once with
            ``make_fx``), ``"compiled"`` (that graph compiled by TorchInductor), ``"vmap"``
            (``torch.func.vmap`` re-running the model at each call) or ``"loop"`` (one
            autograd call per chain; the fallback for models ``vmap`` cannot batch).
    """

    def __init__(
        self,
        model: Callable[..., Any],
        args: tuple,
        kwargs: dict,
        dtype: torch.dtype,
        device: torch.device,
        data_positions: tuple[int, ...] = (),
        scaled_sites: frozenset[str] = frozenset(),
        likelihood_scale: float = 1.0,
        batched_data: bool = False,
    ) -> None:
        self.model = model
        self.args = args
        self.kwargs = kwargs
        self.dtype = dtype
        self.device = device
        self.data_positions = tuple(data_positions)
        self.scaled_sites = frozenset(scaled_sites)
        self.likelihood_scale = float(likelihood_scale)
        self.batched_data = batched_data
        self.prior_trace = trace_model(model, args, kwargs)
        self.sites, self.observed = _latent_sites(self.prior_trace)
        if not self.sites:
            raise ValueError(
                "model has no latent sample sites: nothing to sample (is it a Pyro model with "
                "pyro.sample statements that are not observed?)"
            )
        self.dim = sum(s.size for s in self.sites)
        self.mode = "vmap"
        self._batched: PotentialAndGrad = self._vmapped_value_and_grad
        self._captured_for: int | None = None
        self.graph: PotentialAndGrad | None = None

    # -- single-vector maths -------------------------------------------------------------
    def constrain(self, z: torch.Tensor) -> dict[str, torch.Tensor]:
        """Map flat unconstrained ``z[..., D]`` to constrained site values ``[..., *shape]``."""
        batch = z.shape[:-1]
        out = {}
        for s in self.sites:
            u = z[..., s.offset : s.offset + s.size].reshape(*batch, *s.unconstrained_shape)
            out[s.name] = s.transform(u)
        return out

    def unconstrain(self, values: dict[str, torch.Tensor], batch: tuple[int, ...]) -> torch.Tensor:
        """Inverse of :meth:`constrain`: constrained site values to a flat ``[*batch, D]``."""
        parts = []
        for s in self.sites:
            if s.name not in values:
                raise ValueError(f"init is missing latent site '{s.name}'")
            x = torch.as_tensor(values[s.name], dtype=self.dtype, device=self.device)
            x = x.expand(*batch, *s.shape)
            u = s.transform.inv(x)
            parts.append(u.reshape(*batch, s.size))
        return torch.cat(parts, dim=-1)

    def _model_args(self, data: tuple[torch.Tensor, ...]) -> tuple:
        if not data:
            return self.args
        args = list(self.args)
        for pos, value in zip(self.data_positions, data, strict=True):
            args[pos] = value
        return tuple(args)

    def _log_joint_one(self, z: torch.Tensor, data: tuple[torch.Tensor, ...] = ()) -> torch.Tensor:
        values = {}
        log_det = z.new_zeros(())
        for s in self.sites:
            u = z[s.offset : s.offset + s.size].reshape(s.unconstrained_shape)
            x = s.transform(u)
            log_det = log_det + s.transform.log_abs_det_jacobian(u, x).sum()
            values[s.name] = x
        conditioned = poutine.condition(self.model, data=values)
        if self.scaled_sites and self.likelihood_scale != 1.0:
            conditioned = _ScaleSites(self.scaled_sites, self.likelihood_scale)(conditioned)
        tr = poutine.trace(conditioned).get_trace(*self._model_args(data), **self.kwargs)
        return tr.log_prob_sum() + log_det

    def potential_one(self, z: torch.Tensor) -> torch.Tensor:
        """Potential energy of one flat vector ``z[D]`` (eager, re-runs the model)."""
        with _model_context(self.dtype):
            return -self._log_joint_one(z)

    def _vmapped_value_and_grad(
        self, z: torch.Tensor, *data: torch.Tensor
    ) -> tuple[torch.Tensor, torch.Tensor]:
        def pot(x: torch.Tensor, *batch: torch.Tensor) -> torch.Tensor:
            return -self._log_joint_one(x, batch)

        in_dims = (0, *((0 if self.batched_data else None) for _ in data))
        # The chains are independent slices of the vmapped potential, so the gradient of their sum
        # is each chain's gradient. Plain autograd rather than ``torch.func.grad``: the latter
        # imports torch._dynamo on first use (about a second of a cold run). Only ``x`` is an
        # input of the backward pass and nothing keeps a graph, so the model's parameters get no
        # ``.grad`` and the outputs no autograd history (a sampler feeding them back would
        # otherwise grow it over the run).
        with _model_context(self.dtype), torch.enable_grad():
            x = z.detach().requires_grad_(True)
            value = torch.func.vmap(pot, in_dims=in_dims)(x, *data)
            grad = torch.autograd.grad(value.sum(), x, allow_unused=True)[0] if value.requires_grad else None
        if grad is None:  # a potential that does not depend on the latent values
            grad = torch.zeros_like(x)
        return value.detach(), grad

    def _loop_value_and_grad(
        self, z: torch.Tensor, *data: torch.Tensor
    ) -> tuple[torch.Tensor, torch.Tensor]:
        values, grads = [], []
        with _model_context(self.dtype):
            for i, zi in enumerate(z):
                batch = tuple(d[i] for d in data) if self.batched_data else data
                x = zi.detach().requires_grad_(True)
                u = -self._log_joint_one(x, batch)
                (g,) = torch.autograd.grad(u, x)
                values.append(u.detach())
                grads.append(g)
        return torch.stack(values), torch.stack(grads)

    # -- the hot path ----------------------------------------------------------------------
    def value_and_grad(self, z: torch.Tensor, *data: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor]:
        """Potential and its gradient for a batch of flat vectors ``z[C, D]`` -> ``([C], [C, D])``.

        ``data`` are the data inputs (minibatches) at ``data_positions``, if any. When the
        batch raises a numerical failure (see :func:`~bayesact.infer.integrator.is_numerical_failure`,
        e.g. a Cholesky of a matrix that is not positive-definite), the chains are evaluated one
        by one and those that fail get U = +inf and ∇U = NaN: the sampler counts a divergence.
        """
        try:
            if self._captured_for is not None and z.shape[0] != self._captured_for:
                return self._eager(z, *data)
            return self._batched(z, *data)
        except Exception as exc:  # re-raised below unless numerical
            if not is_numerical_failure(exc):
                raise
        return self._per_chain_guarded(z, *data)

    def _per_chain_guarded(self, z: torch.Tensor, *data: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor]:
        values, grads = [], []
        tiled = self._captured_for == z.shape[0]  # the captured graph on copies of one chain
        for i in range(z.shape[0]):
            batch = tuple(d[i : i + 1] for d in data) if self.batched_data else data
            try:
                if tiled:
                    batch = tuple(b.expand_as(d).contiguous() for b, d in zip(batch, data, strict=True))
                    u, g = self._batched(z[i : i + 1].expand_as(z).contiguous(), *batch)
                    u, g = u[:1], g[:1]
                else:
                    u, g = self._eager(z[i : i + 1], *batch)
            except Exception as exc:  # re-raised below unless numerical
                if not is_numerical_failure(exc):
                    raise
                u, g = z.new_full((1,), math.inf), torch.full_like(z[i : i + 1], math.nan)
            values.append(u.detach())
            grads.append(g.detach())
        return torch.cat(values), torch.cat(grads)

    def _eager(self, z: torch.Tensor, *data: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor]:
        if self.mode == "loop":
            return self._loop_value_and_grad(z, *data)
        return self._vmapped_value_and_grad(z, *data)

    def prepare(
        self,
        num_chains: int,
        capture: bool = True,
        compile: bool = False,
        example_data: tuple[torch.Tensor, ...] = (),
    ) -> str:
        """Choose the fastest faithful evaluation for ``num_chains`` chains; return its mode.

        Tries, in order: a captured graph of the vmapped gradient (checked against the eager
        gradient at two random points), plain ``vmap``, and a per-chain loop. ``compile``
        also compiles the captured graph with TorchInductor. ``example_data`` are data inputs
        with the shapes of the real ones (minibatch samplers).
        """
        gen = torch.Generator(device="cpu").manual_seed(12345)
        probes = [
            (torch.rand(num_chains, self.dim, generator=gen, dtype=torch.float64) * 2 - 1).to(
                device=self.device, dtype=self.dtype
            )
            for _ in range(2)
        ]
        try:
            refs = [self._vmapped_value_and_grad(p, *example_data) for p in probes]
            self.mode = "vmap"
        except Exception:
            self.mode = "loop"
            self._batched = self._loop_value_and_grad
            return self.mode
        self._batched = self._vmapped_value_and_grad
        if not capture:
            return self.mode
        try:
            graph = self._capture(probes[0], example_data)
            fn: PotentialAndGrad = graph.forward  # without nn.Module.__call__'s hook checks
            mode = "captured"
            if compile and compilation.is_enabled():
                try:
                    fn = CompiledFunction(graph, (probes[0], *example_data), name="hmc_potential")
                    mode = "compiled"
                except CompileFailed:  # warned once by bayesact.compilation: the captured graph runs
                    pass
            if all(
                outputs_close(fn(p, *example_data), r)
                for p, r in zip(probes, refs, strict=True)
            ):
                self.graph = graph
                self._batched = fn
                self._captured_for = num_chains
                self.mode = mode
        except Exception as exc:  # any failure to capture keeps the eager vmap path
            warn_user(f"could not capture the model's gradient as a graph ({exc!r}); using vmap")
        return self.mode

    def _capture(self, example: torch.Tensor, data: tuple[torch.Tensor, ...] = ()) -> torch.fx.GraphModule:
        from torch.fx.experimental.proxy_tensor import make_fx

        def value_and_grad(z: torch.Tensor, *batch: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor]:
            return self._vmapped_value_and_grad(z, *batch)

        graph = make_fx(value_and_grad)(example, *data)
        graph.graph.eliminate_dead_code()
        graph.recompile()
        graph = detach_constants(graph)  # torch 2.14's make_fx drops detach: see its docstring
        # the per-call work Pyro's replay leaves (input-independent operations, identity views,
        # the zero-padded per-site gradient pieces): same numbers, half the operations
        with torch.no_grad():
            return simplify(graph, example, *data)


def build_potential(
    model: Callable[..., Any],
    args: tuple,
    kwargs: dict,
    *,
    dtype: torch.dtype,
    device: torch.device,
    num_chains: int,
    capture: bool = True,
    compile: bool = False,
) -> Potential:
    """Trace ``model`` once and prepare a batched potential-and-gradient for ``num_chains``."""
    potential = Potential(model, args, kwargs, dtype, device)
    potential.prepare(num_chains, capture=capture, compile=compile)
    return potential
