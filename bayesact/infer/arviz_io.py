"""ArviZ conversion from plain numpy dictionaries, for ArviZ 0.x and 1.x.

This module imports neither torch nor Pyro, so it can be tested on any Python with ArviZ.
ArviZ < 1 returns ``arviz.InferenceData`` (``az.from_dict``); ArviZ >= 1 (Python >= 3.12)
returns ``xarray.DataTree`` (``arviz_base.from_dict``). Groups are dictionaries of arrays
shaped (chain, draw, ...) except ``observed_data``, which has no sample dimensions.
"""

from __future__ import annotations

from typing import Any

import numpy as np

__all__ = [
    "GROUPS",
    "arviz_major_version",
    "from_numpy",
    "group_names",
    "load_netcdf",
    "read_group",
    "summary",
]

GROUPS = (
    "posterior",
    "sample_stats",
    "log_likelihood",
    "observed_data",
    "posterior_predictive",
    "predictions",
)

Groups = dict[str, dict[str, np.ndarray]]


def arviz_major_version() -> int:
    """Major version of the installed ArviZ (0 for the 0.x line)."""
    import arviz

    return int(str(arviz.__version__).split(".")[0])


def _default_dims(groups: Groups) -> dict[str, list[str]]:
    """Name event dimensions ``<var>_dim_<k>``; observed variables share names across groups."""
    dims: dict[str, list[str]] = {}
    for group, variables in groups.items():
        skip = 0 if group in ("observed_data", "constant_data") else 2
        for name, value in variables.items():
            ndim = np.ndim(value) - skip
            if ndim > 0 and name not in dims:
                dims[name] = [f"{name}_dim_{k}" for k in range(ndim)]
    return dims


def from_numpy(
    groups: Groups,
    dims: dict[str, list[str]] | None = None,
    coords: dict[str, Any] | None = None,
    attrs: dict[str, Any] | None = None,
) -> Any:
    """Build an ArviZ object from ``{group: {var: array}}``.

    Args:
        groups: group name (one of :data:`GROUPS`) to variables; arrays are (chain, draw, ...)
            except in ``observed_data``.
        dims: event dimension names per variable (default ``<var>_dim_<k>``, shared by the
            same variable in every group so that observed data and log-likelihood align).
        coords: coordinate values per dimension name.
        attrs: attributes stored on every group.

    Returns:
        ``arviz.InferenceData`` on ArviZ < 1, ``xarray.DataTree`` on ArviZ >= 1.
    """
    unknown = set(groups) - set(GROUPS)
    if unknown:
        raise ValueError(f"unknown ArviZ group(s) {sorted(unknown)}; expected some of {GROUPS}")
    groups = {g: {k: np.asarray(v) for k, v in d.items()} for g, d in groups.items() if d}
    all_dims = _default_dims(groups)
    all_dims.update(dims or {})
    if arviz_major_version() >= 1:
        import arviz_base

        group_attrs = {g: dict(attrs) for g in groups} if attrs else None
        return arviz_base.from_dict(groups, dims=all_dims, coords=coords, attrs=group_attrs)
    import arviz as az

    by_keyword: dict[str, Any] = groups  # ArviZ 0.x takes each group as a keyword argument
    return az.from_dict(**by_keyword, dims=all_dims, coords=coords, attrs=attrs)


def group_names(data: Any) -> list[str]:
    """Names of the groups present in an InferenceData or DataTree."""
    if hasattr(data, "groups") and callable(data.groups):  # InferenceData
        return list(data.groups())
    return list(data.children)


def read_group(data: Any, group: str) -> dict[str, np.ndarray]:
    """Variables of one group as numpy arrays."""
    ds = data[group]
    if hasattr(ds, "to_dataset"):  # a DataTree node
        ds = ds.to_dataset()
    return {str(k): np.asarray(v.values) for k, v in ds.data_vars.items()}


def load_netcdf(path: str) -> Any:
    """Read a file written by ``.to_netcdf`` back as InferenceData / DataTree."""
    if arviz_major_version() >= 1:
        import xarray as xr

        return xr.open_datatree(path).load()
    import arviz as az

    return az.from_netcdf(path)


def summary(data: Any, var_names: list[str] | None = None, **kwargs: Any) -> Any:
    """ArviZ summary table: mean, sd, interval, ess_bulk, ess_tail, r_hat (a DataFrame)."""
    import arviz as az

    return az.summary(data, var_names=var_names, **kwargs)
