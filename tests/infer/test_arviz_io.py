"""ArviZ conversion from numpy dicts. Imports no torch, so it also runs on Python 3.12 with
ArviZ 1.x (``pytest --noconftest tests/infer/test_arviz_io.py``)."""

from __future__ import annotations

import importlib.util
import pathlib

import numpy as np
import pytest

_PATH = pathlib.Path(__file__).parents[2] / "bayesact" / "infer" / "arviz_io.py"
_spec = importlib.util.spec_from_file_location("arviz_io_under_test", _PATH)
arviz_io = importlib.util.module_from_spec(_spec)
_spec.loader.exec_module(arviz_io)


def make_groups(rng: np.random.Generator) -> dict[str, dict[str, np.ndarray]]:
    return {
        "posterior": {"mu": rng.normal(size=(2, 50)), "w": rng.normal(size=(2, 50, 3))},
        "sample_stats": {
            "diverging": np.zeros((2, 50), bool),
            "energy": rng.normal(size=(2, 50)),
            "n_steps": np.full((2, 50), 3),
        },
        "observed_data": {"y": rng.normal(size=7)},
        "log_likelihood": {"y": rng.normal(size=(2, 50, 7))},
        "posterior_predictive": {"y": rng.normal(size=(2, 50, 7))},
    }


def test_from_numpy_builds_all_groups_with_shared_observation_dims(tmp_path):
    groups = make_groups(np.random.default_rng(0))
    data = arviz_io.from_numpy(groups, attrs={"engine": "test"})
    names = set(arviz_io.group_names(data))
    assert {"posterior", "sample_stats", "observed_data", "log_likelihood", "posterior_predictive"} <= names
    post = arviz_io.read_group(data, "posterior")
    np.testing.assert_array_equal(post["w"], groups["posterior"]["w"])
    ll = data["log_likelihood"]["y"]
    obs = data["observed_data"]["y"]
    assert ll.dims == ("chain", "draw", "y_dim_0") and obs.dims == ("y_dim_0",)
    if arviz_io.arviz_major_version() >= 1:
        assert type(data).__name__ == "DataTree"
    else:
        assert type(data).__name__ == "InferenceData"
    if not any(importlib.util.find_spec(m) for m in ("h5netcdf", "netCDF4")):
        return  # ArviZ 1.x does not install a netCDF backend (Posterior.save does not need one)
    path = tmp_path / "post.nc"
    data.to_netcdf(str(path))
    back = arviz_io.load_netcdf(str(path))
    for group in ("log_likelihood", "observed_data"):
        np.testing.assert_array_equal(arviz_io.read_group(back, group)["y"], groups[group]["y"])


def test_summary_reports_convergence_columns():
    data = arviz_io.from_numpy({"posterior": make_groups(np.random.default_rng(1))["posterior"]})
    table = arviz_io.summary(data)
    for col in ("mean", "sd", "ess_bulk", "ess_tail", "r_hat"):
        assert col in table.columns
    assert list(table.index)[:2] == ["mu", "w[0]"]
    # iid normal draws: the mean is near 0 and r_hat near 1 (loose: 100 draws)
    assert abs(float(table.loc["mu", "mean"])) < 0.5
    assert float(table.loc["mu", "r_hat"]) < 1.1


def test_unknown_group_is_rejected():
    with pytest.raises(ValueError, match="unknown ArviZ group"):
        arviz_io.from_numpy({"posterior_samples": {"a": np.zeros((1, 2))}})


def test_dims_and_coords_name_event_dimensions_in_every_group():
    groups = make_groups(np.random.default_rng(2))
    data = arviz_io.from_numpy(groups, dims={"y": ["obs"], "w": ["feature"]},
                               coords={"obs": np.arange(7) * 10, "feature": ["a", "b", "c"]})
    for group in ("log_likelihood", "posterior_predictive"):
        assert data[group]["y"].dims == ("chain", "draw", "obs")
    assert data["observed_data"]["y"].dims == ("obs",)
    assert data["posterior"]["w"].dims == ("chain", "draw", "feature")
    np.testing.assert_array_equal(data["observed_data"]["obs"].values, np.arange(7) * 10)
    assert list(data["posterior"]["feature"].values) == ["a", "b", "c"]
