"""The result of MCMC: draws shaped (chain, draw, ...), sample statistics, ArviZ conversion."""

from __future__ import annotations

import os
from collections.abc import Callable
from typing import Any

import numpy as np
import torch

from bayesact.infer import arviz_io
from bayesact.infer.checkpoint import is_safe_file, load_checkpoint, save_checkpoint, to_plain
from bayesact.infer.replay import replay_sites

__all__ = ["POSTERIOR_FORMAT", "Posterior"]

POSTERIOR_FORMAT = "bayesact.infer.posterior/1"
_NETCDF_MAGIC = (b"CDF", b"\x89HDF")

# Names ArviZ reads (diverging, reached_max_treedepth, energy, ...); ``num_steps`` is kept in
# ``sample_stats`` under both names and written to ArviZ once, as ``n_steps``.
_ARVIZ_SKIP = {"num_steps"}


def _plain_info(info: dict[str, Any]) -> dict[str, Any]:
    """The entries of ``info`` that are plain data (objects such as a model are left out)."""
    out = {}
    for key, value in info.items():
        try:
            out[str(key)] = to_plain(value)
        except TypeError:
            continue
    return out


def _is_netcdf(path: str) -> bool:
    with open(path, "rb") as fh:
        head = fh.read(4)
    return any(head.startswith(m) for m in _NETCDF_MAGIC)


def _check_dims(groups: dict[str, dict[str, np.ndarray]], dims: dict[str, list[str]]) -> None:
    """Each named variable exists and gets one name per event dimension."""
    ndims: dict[str, int] = {}
    for group, variables in groups.items():
        skip = 0 if group == "observed_data" else 2
        for name, value in variables.items():
            ndims.setdefault(name, np.ndim(value) - skip)
    for name, names in dims.items():
        if name not in ndims:
            raise ValueError(f"dims names '{name}', which is not a variable here; have {sorted(ndims)}")
        if not isinstance(names, list | tuple) or not all(isinstance(n, str) for n in names):
            raise TypeError(f"dims['{name}'] must be a list of dimension names, got {names!r}")
        if len(names) != ndims[name]:
            raise ValueError(
                f"dims['{name}'] has {len(names)} name(s) but '{name}' has {ndims[name]} event dimension(s)"
            )


def _to_numpy(value: Any) -> np.ndarray:
    if isinstance(value, torch.Tensor):
        return value.detach().cpu().numpy()
    return np.asarray(value)


class Posterior:
    """Posterior draws of a Pyro model.

    Attributes:
        samples: site name -> tensor shaped (chain, draw, *site_shape), constrained space
            (latent and deterministic sites).
        sample_stats: per-draw statistics shaped (chain, draw): ``diverging``, ``tree_depth``,
            ``num_steps`` (also as ``n_steps``), ``reached_max_treedepth``, ``energy``,
            ``energy_error``, ``step_size``, ``acceptance_rate``, ``lp`` (= -U, the log joint
            in unconstrained space including the log-Jacobian).
        observed: observed site name -> observed value.
        info: run facts (engine, potential mode, timings, gradient counts, interruption).
    """

    def __init__(
        self,
        samples: dict[str, torch.Tensor],
        sample_stats: dict[str, torch.Tensor],
        *,
        model: Callable[..., Any] | None = None,
        args: tuple = (),
        kwargs: dict[str, Any] | None = None,
        observed: dict[str, torch.Tensor] | None = None,
        info: dict[str, Any] | None = None,
        log_likelihood: dict[str, torch.Tensor] | None = None,
        posterior_predictive: dict[str, torch.Tensor] | None = None,
    ) -> None:
        self.model = model
        self.args = args
        self.kwargs = dict(kwargs or {})
        self.samples = dict(samples)
        self.sample_stats = dict(sample_stats)
        self.observed = dict(observed or {})
        self.info = dict(info or {})
        self._log_likelihood = log_likelihood
        self.posterior_predictive = dict(posterior_predictive or {})

    # -- shape ------------------------------------------------------------------------------
    @property
    def num_chains(self) -> int:
        return int(next(iter(self.samples.values())).shape[0]) if self.samples else 0

    @property
    def num_draws(self) -> int:
        return int(next(iter(self.samples.values())).shape[1]) if self.samples else 0

    @property
    def num_divergences(self) -> int:
        """Number of divergent transitions after warmup (never hidden: also in ``sample_stats``)."""
        div = self.sample_stats.get("diverging")
        return int(div.sum()) if div is not None else 0

    def __repr__(self) -> str:
        sites = ", ".join(f"{k}{tuple(v.shape[2:])}" for k, v in self.samples.items())
        return (
            f"Posterior(chains={self.num_chains}, draws={self.num_draws}, "
            f"divergences={self.num_divergences}, sites=[{sites}])"
        )

    # -- model replays ----------------------------------------------------------------------
    def add_deterministic_sites(self) -> None:
        """Replay the model at every draw and add its ``pyro.deterministic`` sites."""
        if self.model is None or self.num_draws == 0:
            return
        replayed = replay_sites(self.model, self.args, self.kwargs, self.samples)
        self._log_likelihood = replayed["log_likelihood"]
        for name, value in replayed["deterministic"].items():
            self.samples.setdefault(name, value)

    @property
    def log_likelihood(self) -> dict[str, torch.Tensor]:
        """Pointwise log-likelihood per observed site, shaped (chain, draw, *obs_shape)."""
        if self._log_likelihood is None:
            if self.model is None or self.num_draws == 0:
                return {}
            self._log_likelihood = replay_sites(
                self.model, self.args, self.kwargs, self.samples
            )["log_likelihood"]
        return self._log_likelihood

    # -- ArviZ ------------------------------------------------------------------------------
    def _groups(self) -> dict[str, dict[str, np.ndarray]]:
        groups = {
            "posterior": {k: _to_numpy(v) for k, v in self.samples.items()},
            "sample_stats": {
                k: _to_numpy(v) for k, v in self.sample_stats.items() if k not in _ARVIZ_SKIP
            },
            "observed_data": {k: _to_numpy(v) for k, v in self.observed.items()},
            "log_likelihood": {k: _to_numpy(v) for k, v in self.log_likelihood.items()},
            "posterior_predictive": {
                k: _to_numpy(v) for k, v in self.posterior_predictive.items()
            },
        }
        return {k: v for k, v in groups.items() if v}

    def _attrs(self) -> dict[str, Any]:
        keep = (str, int, float, bool)
        return {
            f"bayesact_{k}": (int(v) if isinstance(v, bool) else v)
            for k, v in self.info.items()
            if isinstance(v, keep) and v is not None
        }

    def to_arviz(
        self, coords: dict[str, Any] | None = None, dims: dict[str, list[str]] | None = None
    ) -> Any:
        """ArviZ object with groups posterior, sample_stats, observed_data, log_likelihood
        (one variable per observed site) and posterior_predictive when present.

        Args:
            coords: coordinate values per dimension name, e.g. ``{"obs": np.arange(n)}``.
            dims: event dimension names per variable, e.g. ``{"y": ["obs"]}`` (as
                ``az.from_pyro``); a name shared by several groups (an observed site in
                ``observed_data``, ``log_likelihood`` and ``posterior_predictive``) is
                used in all of them. Unnamed dimensions are ``<var>_dim_<k>``.

        Returns ``arviz.InferenceData`` on ArviZ < 1 and ``xarray.DataTree`` on ArviZ >= 1.
        """
        groups = self._groups()
        if coords is not None and not isinstance(coords, dict):
            raise TypeError(f"coords must be a dict of dimension name -> values, got {type(coords).__name__}")
        if dims is not None:
            if not isinstance(dims, dict):
                raise TypeError(f"dims must be a dict (variable -> dim names), got {type(dims).__name__}")
            _check_dims(groups, dims)
            dims = {k: list(v) for k, v in dims.items()}
        return arviz_io.from_numpy(groups, dims=dims, coords=coords, attrs=self._attrs())

    def summary(self, var_names: list[str] | None = None, **kwargs: Any) -> Any:
        """ArviZ summary (mean, sd, interval, ess_bulk, ess_tail, r_hat, ...) as a DataFrame."""
        idata = arviz_io.from_numpy({"posterior": self._groups()["posterior"]})
        return arviz_io.summary(idata, var_names=var_names, **kwargs)

    # -- persistence ------------------------------------------------------------------------
    def save(self, path: str | os.PathLike) -> None:
        """Write the draws, sample statistics, observed data, log-likelihood, posterior
        predictive and ``info`` to a bayesact safe file (tensors and plain data with a SHA-256
        checksum, written atomically; see :mod:`bayesact.infer.checkpoint`). It needs no
        netCDF library, whatever the ArviZ version; for a netCDF file use
        ``post.to_arviz().to_netcdf(path)`` (needs ``h5netcdf`` or ``netCDF4``). The model is
        not saved.
        """
        save_checkpoint(os.fspath(path), {
            "format": POSTERIOR_FORMAT,
            "samples": self.samples,
            "sample_stats": self.sample_stats,
            "observed": self.observed,
            "log_likelihood": self.log_likelihood,
            "posterior_predictive": self.posterior_predictive,
            "info": _plain_info(self.info),
        })

    @classmethod
    def load(cls, path: str | os.PathLike) -> Posterior:
        """Read a Posterior written by :meth:`save`, with its ``info`` (and ``info["path"]``),
        without the model (replays need it). The file is checked against its checksum and read
        with ``torch.load(weights_only=True)``: it cannot run code. netCDF files written by
        ``to_arviz().to_netcdf`` (or by older bayesact versions) are read through ArviZ."""
        path = os.fspath(path)
        if not os.path.isfile(path):
            raise ValueError(f"no saved Posterior at {path!r}")
        if is_safe_file(path) or not _is_netcdf(path):
            data = load_checkpoint(path, POSTERIOR_FORMAT)
            return cls(
                data["samples"], data["sample_stats"], observed=data["observed"],
                log_likelihood=data["log_likelihood"], posterior_predictive=data["posterior_predictive"],
                info={**data["info"], "path": path},
            )
        data = arviz_io.load_netcdf(path)
        names = arviz_io.group_names(data)

        def group(name: str) -> dict[str, torch.Tensor]:
            if name not in names:
                return {}
            return {k: torch.as_tensor(v) for k, v in arviz_io.read_group(data, name).items()}

        stats = group("sample_stats")
        if "n_steps" in stats:
            stats["num_steps"] = stats["n_steps"]
        return cls(
            group("posterior"),
            stats,
            observed=group("observed_data"),
            log_likelihood=group("log_likelihood"),
            posterior_predictive=group("posterior_predictive"),
            info={"engine": "loaded", "path": os.fspath(path)},
        )

    @staticmethod
    def concat_chains(parts: list[Posterior]) -> Posterior:
        """Join posteriors of the same model along the chain dimension."""
        if not parts:
            raise ValueError("concat_chains needs at least one Posterior")
        first = parts[0]
        draws = min(p.num_draws for p in parts)

        def cat(dicts: list[dict[str, torch.Tensor]]) -> dict[str, torch.Tensor]:
            return {k: torch.cat([d[k][:, :draws] for d in dicts]) for k in dicts[0]}

        info = dict(first.info)
        for key in ("warmup_seconds", "sampling_seconds", "num_gradient_calls",
                    "sampling_gradient_calls", "chain_gradients"):
            if key in info:
                info[key] = sum(p.info.get(key, 0) for p in parts)
        info["interrupted"] = any(p.info.get("interrupted", False) for p in parts)
        info["chain_method"] = "sequential"
        loglik = cat([p.log_likelihood for p in parts]) if first.model is not None else None
        out = Posterior(
            cat([p.samples for p in parts]),
            cat([p.sample_stats for p in parts]),
            model=None,
            args=first.args,
            kwargs=first.kwargs,
            observed=first.observed,
            info=info,
            log_likelihood=loglik,
        )
        out.model = first.model
        return out
