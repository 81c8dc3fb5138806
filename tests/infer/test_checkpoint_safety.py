"""Checkpoint safety: weights-only loading (no code runs), a clear message when the model cannot
be imported, refusal of a different model or data, integrity checks, atomic writes."""

from __future__ import annotations

import io
import os
import subprocess
import sys
import textwrap
from pathlib import Path

import pyro
import pyro.distributions as dist
import pytest
import torch

import bayesact.infer.checkpoint as ckpt
from bayesact.infer import mcmc, resume
from bayesact.infer.checkpoint import MCMC_FORMAT, load_checkpoint, save_checkpoint

DT = torch.float64
X = torch.tensor([[0.5, -1.0], [1.5, 0.3], [-0.7, 0.8], [0.2, 0.1], [1.1, -0.4], [-1.3, 0.6]], dtype=DT)
Y = torch.tensor([1.0, 1.0, 0.0, 1.0, 1.0, 0.0], dtype=DT)
OPTS = dict(num_chains=2, num_warmup=10, num_samples=10, seed=1, progress=False, checkpoint_every=5)


def logistic(x: torch.Tensor, y: torch.Tensor) -> None:
    w = pyro.sample("w", dist.Normal(torch.zeros(x.shape[1], dtype=DT), 1.0).to_event(1))
    with pyro.plate("data", x.shape[0]):
        pyro.sample("y", dist.Bernoulli(logits=x @ w), obs=y)


def logistic_with_bias(x: torch.Tensor, y: torch.Tensor) -> None:
    w = pyro.sample("w", dist.Normal(torch.zeros(x.shape[1], dtype=DT), 1.0).to_event(1))
    b = pyro.sample("b", dist.Normal(torch.tensor(0.0, dtype=DT), 1.0))
    with pyro.plate("data", x.shape[0]):
        pyro.sample("y", dist.Bernoulli(logits=x @ w + b), obs=y)


@pytest.fixture(scope="module")
def run(tmp_path_factory) -> tuple[Path, torch.Tensor]:
    path = tmp_path_factory.mktemp("ckpt") / "run.ckpt"
    post = mcmc(logistic, X, Y, checkpoint=path, **OPTS)
    return path, post.samples["w"]


class _Payload:
    """Unpickling this creates ``marker``: the code a crafted checkpoint would run."""

    def __init__(self, marker: Path) -> None:
        self.marker = marker

    def __reduce__(self):
        return (open, (str(self.marker), "w"))


# -- arbitrary code ----------------------------------------------------------------------------
def test_pickled_checkpoint_is_refused_without_running_its_code(tmp_path):
    marker = tmp_path / "pwned"
    path = tmp_path / "evil.ckpt"
    torch.save({"format": MCMC_FORMAT, "config": {}, "state": _Payload(marker)}, path)
    with pytest.raises(ValueError, match="not a bayesact safe file"):
        resume(path, progress=False)
    assert not marker.exists()


def test_crafted_safe_file_with_a_pickled_object_is_refused_without_running_it(tmp_path):
    marker = tmp_path / "pwned"
    buffer = io.BytesIO()
    torch.save({"format": MCMC_FORMAT, "state": _Payload(marker)}, buffer)
    data = buffer.getvalue()
    import hashlib

    path = tmp_path / "evil.ckpt"
    header = b"bayesact-safe/1 sha256=%s size=%d\n" % (hashlib.sha256(data).hexdigest().encode(), len(data))
    path.write_bytes(header + data)
    with pytest.raises(ValueError, match="refused: it holds objects other than tensors"):
        resume(path, progress=False)
    assert not marker.exists()


def test_a_checkpoint_naming_a_stdlib_function_as_model_is_refused(run, tmp_path):
    path, _ = run
    payload = load_checkpoint(path, MCMC_FORMAT)
    payload["model_ref"], payload["args"] = "os:system", ("touch pwned",)
    evil = tmp_path / "evil.ckpt"
    save_checkpoint(evil, payload)
    with pytest.raises(ValueError, match=r"refused: pass the model"):
        resume(evil, progress=False)


def test_checkpoint_holds_only_plain_data_and_loads_weights_only(run):
    path, _ = run
    payload = load_checkpoint(path, MCMC_FORMAT)
    assert payload["model_ref"] == f"{logistic.__module__}:logistic"
    assert payload["config"]["dtype"] == "torch.float64" and payload["config"]["device"] == "cpu"
    assert set(payload["state"]["dual_averaging"]) == {"log_step", "log_step_avg", "error_avg", "mu", "count"}
    with open(path, "rb") as fh:
        fh.readline()
        torch.load(io.BytesIO(fh.read()), weights_only=True)  # no allow-listed globals needed


def test_save_refuses_objects_that_are_not_plain_data(tmp_path):
    path = tmp_path / "x.ckpt"
    with pytest.raises(TypeError, match=r"payload\['model'\] is a .*function"):
        save_checkpoint(path, {"format": "f", "model": logistic})
    assert not path.exists()


# -- the model cannot be imported --------------------------------------------------------------
def test_resume_from_another_script_asks_for_the_model(tmp_path):
    path = tmp_path / "script.ckpt"
    script = tmp_path / "run_model.py"
    script.write_text(textwrap.dedent(f"""
        import pyro, pyro.distributions as dist, torch
        from bayesact.infer import mcmc
        DT = torch.float64
        def model(y):
            mu = pyro.sample("mu", dist.Normal(torch.tensor(0.0, dtype=DT), 1.0))
            with pyro.plate("data", y.shape[0]):
                pyro.sample("y", dist.Normal(mu, 1.0), obs=y)
        mcmc(model, torch.tensor([0.1, 0.9], dtype=DT), num_chains=1, num_warmup=5,
             num_samples=5, seed=0, progress=False, checkpoint={str(path)!r})
    """))
    env = {**os.environ, "PYTHONPATH": str(Path(__file__).resolve().parents[2])}
    subprocess.run([sys.executable, str(script)], check=True, env=env, timeout=300)
    with pytest.raises(ValueError, match=r"'model' from the script .*resume\(path, model, \*args\)"):
        resume(path, progress=False)

    def model(y):
        mu = pyro.sample("mu", dist.Normal(torch.tensor(0.0, dtype=DT), 1.0))
        with pyro.plate("data", y.shape[0]):
            pyro.sample("y", dist.Normal(mu, 1.0), obs=y)

    post = resume(path, model, progress=False)  # the stored arguments are reused
    assert post.samples["mu"].shape == (1, 5)


def test_nested_model_without_an_import_path_asks_for_the_model(tmp_path):
    def local_model(x, y):
        logistic(x, y)

    path = tmp_path / "nested.ckpt"
    mcmc(local_model, X, Y, checkpoint=path, **OPTS)
    with pytest.raises(ValueError, match=r"does not name an importable model.*resume\(path, model"):
        resume(path, progress=False)
    assert resume(path, local_model, X, Y, progress=False).num_draws == 10


# -- a different model or data -----------------------------------------------------------------
def test_resume_refuses_flipped_labels_by_name(run):
    path, _ = run
    with pytest.raises(ValueError, match=r"argument 2 \(args\[1\]\) has the same shape and dtype but "
                                         r"different values"):
        resume(path, logistic, X, 1.0 - Y, progress=False)


def test_resume_refuses_another_feature_count_by_name(run):
    path, _ = run
    x3 = torch.cat([X, X[:, :1]], dim=1)
    with pytest.raises(ValueError, match=r"args\[0\]\) has shape \[6, 3\] here but \[6, 2\] in the"):
        resume(path, logistic, x3, Y, progress=False)


def test_resume_refuses_another_latent_shape_by_name(run):
    path, _ = run
    payload = load_checkpoint(path, MCMC_FORMAT)
    with pytest.raises(ValueError, match=r"latent site 'w' has shape \(3,\) here but \(2,\) in the"):
        ckpt.check_latent_sites(payload, {"w": torch.Size([3])}, str(path))


def test_resume_refuses_another_model_by_site_name(run):
    path, _ = run
    with pytest.raises(ValueError, match="the model has latent site 'b', which the checkpoint lacks"):
        resume(path, logistic_with_bias, X, Y, progress=False)


def test_resume_with_the_same_model_and_data_passes_the_check(run):
    path, samples = run
    post = resume(path, logistic, X, Y.float(), progress=False)  # float32 labels are cast as in the run
    torch.testing.assert_close(post.samples["w"], samples, rtol=0, atol=0)


# -- integrity ---------------------------------------------------------------------------------
def test_corrupted_checkpoint_is_refused_naming_the_file(run, tmp_path):
    path, _ = run
    data = bytearray(path.read_bytes())
    start = len(data) // 2
    for i in range(start, start + 16):
        data[i] ^= 0xFF
    bad = tmp_path / "corrupt.ckpt"
    bad.write_bytes(bytes(data))
    with pytest.raises(ValueError, match=r"corrupt\.ckpt' is corrupted: the SHA-256"):
        resume(bad, progress=False)


def test_truncated_checkpoint_is_refused_naming_the_file(run, tmp_path):
    path, _ = run
    bad = tmp_path / "short.ckpt"
    bad.write_bytes(path.read_bytes()[:-100])
    with pytest.raises(ValueError, match=r"short\.ckpt' is truncated"):
        resume(bad, progress=False)
    bad.write_bytes(path.read_bytes()[:10])
    with pytest.raises(ValueError, match=r"short\.ckpt' is not a bayesact safe file"):
        resume(bad, progress=False)


def test_wrong_format_is_refused(tmp_path):
    path = tmp_path / "other.ckpt"
    save_checkpoint(path, {"format": "something/1", "x": torch.ones(2)})
    with pytest.raises(ValueError, match="has format 'something/1', expected"):
        resume(path, progress=False)


# -- atomic writes -----------------------------------------------------------------------------
def test_writes_are_fsynced_and_atomic(tmp_path, monkeypatch):
    path = tmp_path / "a.ckpt"
    save_checkpoint(path, {"format": "f", "x": torch.arange(3)})
    synced = []
    real_fsync = os.fsync
    monkeypatch.setattr(ckpt.os, "fsync", lambda fd: (synced.append(fd), real_fsync(fd)))

    def failing_replace(src, dst):
        raise OSError("disk full")

    monkeypatch.setattr(ckpt.os, "replace", failing_replace)
    with pytest.raises(OSError, match="disk full"):
        save_checkpoint(path, {"format": "f", "x": torch.arange(5)})
    assert synced, "the temporary file was not fsync'ed before the rename"
    assert torch.equal(load_checkpoint(path, "f")["x"], torch.arange(3))  # the old file is intact
    assert sorted(p.name for p in tmp_path.iterdir()) == ["a.ckpt"]  # no temporary file left


def test_from_plain_rebuilds_dataclasses_named_tuples_and_dtypes(run):
    from bayesact.infer.adaptation import DualAveragingState
    from bayesact.infer.sampler import MCMCConfig, SamplerState

    payload = load_checkpoint(run[0], MCMC_FORMAT)
    cfg = ckpt.from_plain(MCMCConfig, payload["config"])
    assert cfg.dtype is torch.float64 and cfg.device == torch.device("cpu") and cfg.num_chains == 2
    state = ckpt.from_plain(SamplerState, payload["state"])
    assert isinstance(state.dual_averaging, DualAveragingState) and state.iteration == 20
    with pytest.raises(ValueError, match=r"lacks the field\(s\) \['count'\] of DualAveragingState"):
        ckpt.from_plain(DualAveragingState, {k: v for k, v in payload["state"]["dual_averaging"].items()
                                             if k != "count"})


def with_prior(prior: dist.Distribution, y: torch.Tensor) -> None:
    mu = pyro.sample("mu", prior)
    with pyro.plate("data", y.shape[0]):
        pyro.sample("y", dist.Normal(mu, 1.0), obs=y)


def test_arguments_that_are_not_plain_data_must_be_passed_again(tmp_path):
    prior = dist.Normal(torch.tensor(0.0, dtype=DT), 1.0)
    path = tmp_path / "prior.ckpt"
    mcmc(with_prior, prior, Y, checkpoint=path, **OPTS)
    assert load_checkpoint(path, MCMC_FORMAT)["args"] is None
    with pytest.raises(ValueError, match=r"could not store the model.s arguments.*resume\(path, model"):
        resume(path, progress=False)
    assert resume(path, with_prior, prior, Y, progress=False).num_draws == 10


def test_module_instances_and_lambdas_have_no_import_path():
    from pyro.nn import PyroModule

    class Net(PyroModule):
        def forward(self) -> None:
            pass

    assert ckpt.model_reference(Net()) is None
    assert ckpt.model_reference(lambda: None) is None
    assert ckpt.model_reference(logistic) == f"{__name__}:logistic"
