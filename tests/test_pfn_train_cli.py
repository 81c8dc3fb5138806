"""``python -m bayesact.pfn_train CONFIG``: config parsing, a tiny run (JSON and TOML), resume,
and the command under torchrun."""

from __future__ import annotations

import json
import math
import os
import subprocess
import sys
from pathlib import Path
from typing import Any

import pytest
import torch
from torch.distributions import Gamma

from bayesact.models import PFN, BarDistribution
from bayesact.models.pfn import standardization, standardized_borders
from bayesact.pfn_train import build_model, build_prior, load_config, main, prior_draws
from bayesact.priors import GPDatasetPrior, MixtureDatasetPrior, PyroDatasetPrior

ROOT = Path(__file__).resolve().parents[1]


def tiny_config(tmp_path: Path, num_steps: int = 4) -> dict[str, Any]:
    return {
        "output": str(tmp_path / "tiny.pfn"),
        "checkpoint": str(tmp_path / "tiny.ckpt"),
        "prior": {"type": "gp", "num_features": 2, "lengthscale": {"gamma": [3.0, 6.0]}, "noise_std": 0.1},
        "model": {"emsize": 16, "nlayers": 1, "nhead": 2, "num_buckets": 10, "border_samples": 500},
        "training": {"num_steps": num_steps, "batch_size": 4, "seq_len": 12, "seed": 3, "lr": 1e-3,
                     "checkpoint_every": 2},
    }


def write(path: Path, config: dict[str, Any]) -> Path:
    path.write_text(json.dumps(config))
    return path


def test_a_tiny_run_writes_a_loadable_pfn_and_its_record(tmp_path: Path) -> None:
    config = tiny_config(tmp_path)
    assert main([str(write(tmp_path / "c.json", config)), "--no-progress"]) == 0
    pfn = PFN.load(config["output"])
    assert pfn.num_features == 2 and pfn.num_buckets == 10 and pfn.emsize == 16
    record = json.loads(Path(config["output"] + ".train.json").read_text())
    assert record["steps_done"] == 4 and len(record["losses"]) == 4
    assert record["num_params"] == sum(p.numel() for p in pfn.parameters())
    x = torch.rand(1, 5, 2)
    assert pfn.predict(x[:, :3], torch.zeros(1, 3), x[:, 3:]).mean.shape == (1, 2)


def test_resume_continues_an_interrupted_run(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    (tmp_path / "a").mkdir()
    full = tiny_config(tmp_path / "a", num_steps=6)
    main([str(write(tmp_path / "a.json", full)), "--no-progress"])
    part = tiny_config(tmp_path, num_steps=6)
    original = GPDatasetPrior.sample_batch
    calls = []

    def ctrl_c_in_step_5(self: GPDatasetPrior, *args: Any) -> Any:
        calls.append(1)
        if len(calls) == 1 + 5:  # one call draws the borders' y, then one per step
            raise KeyboardInterrupt
        return original(self, *args)

    monkeypatch.setattr(GPDatasetPrior, "sample_batch", ctrl_c_in_step_5)
    with pytest.warns(UserWarning, match="interrupted at step 4"):
        main([str(write(tmp_path / "b.json", part)), "--no-progress"])
    monkeypatch.setattr(GPDatasetPrior, "sample_batch", original)
    main([str(write(tmp_path / "b.json", part)), "--no-progress", "--resume"])
    a = json.loads(Path(full["output"] + ".train.json").read_text())
    b = json.loads(Path(part["output"] + ".train.json").read_text())
    assert b["steps_done"] == 6 and b["losses"] == a["losses"]
    for (name, va), vb in zip(PFN.load(full["output"]).state_dict().items(),
                              PFN.load(part["output"]).state_dict().values(), strict=True):
        assert torch.equal(va, vb), name


def test_toml_config(tmp_path: Path) -> None:
    path = tmp_path / "c.toml"
    path.write_text(f"""
output = "{tmp_path / 'toml.pfn'}"
[prior]
num_features = 1
lengthscale = 0.5
[model]
emsize = 8
nlayers = 1
nhead = 2
num_buckets = 5
border_samples = 200
[training]
num_steps = 2
batch_size = 2
seq_len = 6
seed = 0
""")
    config = load_config(path)
    assert config["model"]["emsize"] == 8
    assert main([str(path), "--no-progress"]) == 0
    assert PFN.load(tmp_path / "toml.pfn").num_features == 1


def regression_model(num_points: int) -> None:
    import pyro
    import pyro.distributions as dist

    x = pyro.sample("x", dist.Uniform(0.0, 1.0).expand([num_points, 1]).to_event(2))
    pyro.sample("y", dist.Normal(x[:, 0], 0.1).to_event(1))


def test_build_prior_from_tables() -> None:
    gp = build_prior({"type": "gp", "num_features": 3, "kernel": "matern52", "lengthscale": {"gamma": [3, 6]},
                      "outputscale": {"lognormal": [0.0, 0.5]}, "noise_std": {"uniform": [0.01, 0.1]}})
    assert isinstance(gp, GPDatasetPrior) and gp.num_features == 3 and gp.kernel == "matern52"
    assert isinstance(gp.lengthscale, Gamma) and float(gp.lengthscale.rate) == 6.0
    pyro_prior = build_prior({"type": "pyro", "model": "tests.test_pfn_train_cli:regression_model"})
    assert isinstance(pyro_prior, PyroDatasetPrior) and pyro_prior.model is regression_model
    mixture = build_prior({"type": "mixture", "components": [{"num_features": 1}, {"num_features": 1}],
                           "weights": [1, 3]})
    assert isinstance(mixture, MixtureDatasetPrior) and mixture.weights.tolist() == [0.25, 0.75]


def test_model_borders_and_width_from_a_per_batch_mixture() -> None:
    prior = build_prior({"type": "mixture", "per_batch": True, "components": [
        {"num_features": 1, "outputscale": 4.0}, {"num_features": 3, "outputscale": 4.0}]})
    y, width = prior_draws(prior, 3000, 10, torch.Generator().manual_seed(0))
    assert width == 3 and y.shape == (300, 10)
    assert 2.5 < float(y.var()) < 6.0  # on the prior's scale: outputscale 4 + noise 0.01
    pfn = build_model({"emsize": 8, "nlayers": 1, "nhead": 2, "num_buckets": 20, "border_samples": 2000,
                       "standardize_y": True}, prior, 10)
    assert pfn.num_features == 3 and pfn.standardize_y and pfn.num_buckets == 20
    # standardised units: a standardised sample of 10 has |z| <= 9/√10 = 2.846 (raw draws reach ~±8)
    assert float(pfn.borders.abs().max()) <= 9 / 10**0.5 + 1e-4 and abs(float(pfn.borders[10])) < 0.2
    # the floor is the 1 % quantile of the per-dataset std of the border draws (raw units, outputscale 4)
    draws, _ = prior_draws(prior, 2000, 10, torch.Generator().manual_seed(0))
    assert pfn.y_std_floor == pytest.approx(float(torch.quantile(draws.std(1).double(), 0.01)), rel=1e-12)
    assert 0.05 < pfn.y_std_floor < 1.0
    # the prior predictive's location and scale, for training sets of n < 2: the pooled draws' mean and std
    assert pfn.y_prior_mean == pytest.approx(float(draws.double().mean()), rel=1e-12)
    assert pfn.y_prior_std == pytest.approx(float(draws.double().std()), rel=1e-12)
    assert abs(pfn.y_prior_mean) < 0.5 and 1.5 < pfn.y_prior_std < 2.5  # outputscale 4: std 2.0
    raw = build_model({"emsize": 8, "nlayers": 1, "nhead": 2, "num_buckets": 20, "border_samples": 2000},
                      prior, 10)
    assert (raw.y_prior_mean, raw.y_prior_std, raw.y_std_floor) == (0.0, 1.0, 0.0)


def near_constant_mixture() -> MixtureDatasetPrior:
    """GP datasets, and 0.5 % of datasets that are constant up to 1e-6 (an almost degenerate prior)."""
    return MixtureDatasetPrior([GPDatasetPrior(1, lengthscale=0.5, noise_std=0.1, dtype=torch.float32),
                                GPDatasetPrior(1, outputscale=1e-12, noise_std=0.0, dtype=torch.float32)],
                               [0.995, 0.005])


def test_cli_borders_are_the_library_rule_on_the_same_draws() -> None:
    # regression: prior_draws standardised with std.clamp(min=1e-12), not the model's rule, so the
    # near-constant datasets entered the borders as unit-spread data instead of as the model sees them
    prior, seq_len = near_constant_mixture(), 10
    spec = {"emsize": 8, "nlayers": 1, "nhead": 2, "num_buckets": 20, "border_samples": 20_000,
            "standardize_y": True, "seed": 4}
    pfn = build_model(spec, prior, seq_len)
    y, _ = prior_draws(prior, 20_000, seq_len, torch.Generator().manual_seed(4))
    assert int((y.std(1) < 1e-5).sum()) > 0  # the draws hold near-constant datasets
    # the model's own standardisation of each dataset (what forward applies), then equal-mass borders
    mean, scale = standardization(y, std_floor=pfn.y_std_floor, min_width=pfn.borders.diff().min())
    z = ((y - mean) / scale).reshape(-1)
    assert torch.equal(pfn.borders, BarDistribution.borders_from_samples(z, 20))
    assert torch.equal(pfn.borders, standardized_borders(y, 20)[0])
    # forward applies the same (m, s_eff): it maps the borders to m + s_eff · b
    x = torch.zeros(*y.shape, 1)
    mapped = mean.unsqueeze(-1) + scale.unsqueeze(-1) * pfn.borders
    assert torch.equal(pfn(x, y, x[:, :1]).borders, mapped)
    old = (y - y.mean(1, keepdim=True)) / y.std(1, keepdim=True).clamp(min=1e-12)  # the former rule
    assert not torch.equal(pfn.borders, BarDistribution.borders_from_samples(old.reshape(-1), 20))


def test_a_far_query_from_a_constant_training_set_is_not_deep_in_the_tails() -> None:
    # regression: with the scale floored only at rounding level (16·eps·|m|/min width), a query 1 away
    # from four training values 0.3 had log density -6.5e9 (20 buckets, float32); the prior's floor
    # (y_std_floor ≈ 0.1 here) puts it 1/0.1 ≈ 10 standardised units out: -11.5 measured
    prior = GPDatasetPrior(1, lengthscale=0.5, outputscale=1.0, noise_std=0.1, dtype=torch.float32)
    torch.manual_seed(0)
    pfn = build_model({"emsize": 16, "nlayers": 1, "nhead": 2, "num_buckets": 20, "border_samples": 4000,
                       "standardize_y": True}, prior, 20)
    floor = pfn.y_std_floor
    assert 0.05 < floor < 0.3
    x, x_test = torch.rand(1, 4, 1), torch.rand(1, 1, 1)
    dist = pfn.predict(x, torch.full((1, 4), 0.3), x_test)
    log_p = dist.log_prob(torch.tensor([[1.3]]))
    # the standardised bar's density at z = (1.3 - 0.3) / floor, with the Jacobian 1 / floor
    unit = BarDistribution(pfn.borders, dist.logits).log_prob(torch.tensor([[(1.3 - 0.3) / floor]]))
    torch.testing.assert_close(log_p, unit - math.log(floor), rtol=1e-4, atol=1e-4)
    assert -100 < float(log_p) < 0


@pytest.mark.parametrize(("spec", "message"), [
    ({"type": "spline"}, "'prior.type'"),
    ({"type": "gp", "lenghtscale": 1.0}, "unknown entries \\['lenghtscale'\\] in 'prior'"),
    ({"type": "gp", "lengthscale": {"beta": [1, 2]}}, "'prior.lengthscale'"),
    ({"type": "gp", "noise_std": "small"}, "'prior.noise_std'"),
    ({"type": "pyro", "model": "no_colon"}, "'prior.model'"),
    ({"type": "mixture", "components": []}, "'prior.components'"),
])
def test_bad_prior_tables_name_the_entry(spec: dict[str, Any], message: str) -> None:
    with pytest.raises(ValueError, match=message):
        build_prior(spec)


def test_bad_config_files(tmp_path: Path, capsys: pytest.CaptureFixture[str]) -> None:
    with pytest.raises(ValueError, match="does not exist"):
        load_config(tmp_path / "missing.json")
    (tmp_path / "bad.json").write_text("{not json")
    with pytest.raises(ValueError, match="not valid JSON"):
        load_config(tmp_path / "bad.json")
    with pytest.raises(ValueError, match="'output' is missing"):
        load_config(write(tmp_path / "c.json", {"prior": {}}))
    with pytest.raises(ValueError, match="unknown entries \\['optimizer'\\]"):
        load_config(write(tmp_path / "c.json", {"output": "x", "prior": {}, "optimizer": {}}))
    assert main([str(tmp_path / "bad.json")]) == 2
    assert "not valid JSON" in capsys.readouterr().err
    config = tiny_config(tmp_path)
    config["training"]["batchsize"] = 3
    with pytest.raises(ValueError, match="unknown entries \\['batchsize'\\] in 'training'"):
        main([str(write(tmp_path / "c.json", config))])


@pytest.mark.slow
def test_the_command_under_torchrun_matches_one_process(tmp_path: Path) -> None:
    """Two gloo ranks via torchrun write the same PFN as one process drawing both ranks' datasets
    (training.data_shards = 2), to 1e-6."""
    ddp = tiny_config(tmp_path)
    ddp["output"], ddp["checkpoint"] = str(tmp_path / "ddp.pfn"), str(tmp_path / "ddp.ckpt")
    env = {**os.environ, "PYTHONPATH": str(ROOT), "OMP_NUM_THREADS": "1"}
    proc = subprocess.run(
        [sys.executable, "-m", "torch.distributed.run", "--standalone", "--nproc_per_node=2", "-m",
         "bayesact.pfn_train", str(write(tmp_path / "ddp.json", ddp)), "--no-progress"],
        cwd=ROOT, env=env, capture_output=True, text=True, timeout=300,
    )
    assert proc.returncode == 0, proc.stderr[-3000:]
    single = tiny_config(tmp_path)
    single["training"]["data_shards"] = 2
    main([str(write(tmp_path / "single.json", single)), "--no-progress"])
    record = json.loads(Path(ddp["output"] + ".train.json").read_text())
    assert record["world_size"] == 2
    for (name, va), vb in zip(PFN.load(ddp["output"]).state_dict().items(),
                              PFN.load(single["output"]).state_dict().values(), strict=True):
        assert torch.allclose(va, vb, atol=1e-6, rtol=0), name


def oracle_gp_nll(x: torch.Tensor, y: torch.Tensor, hyper: dict[str, torch.Tensor], n: int) -> torch.Tensor:
    """−log p(y* | x*, D, θ) of the exact Matérn-5/2 ARD GP given each dataset's true θ (float64), (B,)."""
    x, y = x.double(), y.double()
    ls = hyper["lengthscale"].double()[:, None, None, :]
    r = ((x[:, :, None, :] - x[:, None, :, :]) / ls).square().sum(-1).sqrt()
    s = 5**0.5 * r
    k = hyper["outputscale"].double()[:, None, None] * (1 + s + s**2 / 3) * torch.exp(-s)  # Matérn-5/2
    noise = hyper["noise_std"].double().square()[:, None]
    chol = torch.linalg.cholesky(k[:, :n, :n] + noise[..., None] * torch.eye(n, dtype=torch.float64))
    cross = k[:, n:, :n]
    mean = (cross @ torch.cholesky_solve(y[:, :n, None], chol)).squeeze(-1)
    v = torch.linalg.solve_triangular(chol, cross.transpose(1, 2), upper=False)
    var = k.diagonal(dim1=1, dim2=2)[:, n:] + noise - v.square().sum(1)
    return (0.5 * torch.log(2 * torch.pi * var) + (y[:, n:] - mean).square() / (2 * var)).mean(1)


SHIPPED = ROOT / "bayesact" / "models" / "pfn" / "weights" / "gp_1to5d.pfn"
SHIPPED_CONFIG = ROOT / "examples" / "pfn_gp_1to5d.toml"


@pytest.mark.parametrize(("d", "margin"), [(1, 1.0), (3, 0.3), (5, 0.05)])
def test_the_shipped_pfn_beats_the_prior_predictive(d: int, margin: float) -> None:
    """The shipped PFN (trained by examples/train_pfn_gp.py on examples/pfn_gp_1to5d.toml) on 256
    fresh datasets of its prior with d inputs, n = 30 training points, 30 queries: its NLL per
    query point is below the prior predictive's by ``margin`` nats (the prior predictive is given
    each dataset's true outputscale and noise), and not below the exact GP that knows every
    hyperparameter (the oracle) beyond 3 standard errors. Measured (PFN / prior predictive / oracle):
    d = 1: −0.59 / 1.35 / −0.97; d = 3: 0.60 / 1.29 / 0.33; d = 5: 1.14 / 1.34 / 0.99 (SE ≈ 0.03)."""
    assert SHIPPED.stat().st_size < 10e6
    pfn = PFN.load(SHIPPED).eval()
    prior = build_prior(load_config(SHIPPED_CONFIG)["prior"])
    assert isinstance(prior, MixtureDatasetPrior)
    component = prior.priors[d - 1]
    assert isinstance(component, GPDatasetPrior) and component.num_features == d
    x, y, hyper = component.sample_with_hyperparameters(256, 60, torch.Generator().manual_seed(7))
    n = 30
    with torch.no_grad():
        nll = -pfn(x[:, :n], y[:, :n], x[:, n:]).log_prob(y[:, n:]).mean(1)
    var = (hyper["outputscale"] + hyper["noise_std"].square())[:, None]
    prior_nll = (0.5 * torch.log(2 * torch.pi * var) + y[:, n:].square() / (2 * var)).mean(1)
    oracle = oracle_gp_nll(x, y, hyper, n)
    se = float(nll.std()) / 256**0.5
    assert float(nll.mean()) < float(prior_nll.mean()) - margin, (float(nll.mean()), float(prior_nll.mean()))
    assert float(nll.mean()) > float(oracle.mean()) - 3 * se
