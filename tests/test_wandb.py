"""logger=wandb: a real offline W&B run with the metrics, the resolved config and the pictures."""

import time

import pytest

from tests.helpers import SHARED_DATA, TINY_FIT, needs_mnist
from vaelab.config.schema import LoggerConfig, WandbMode
from vaelab.fit import main
from vaelab.training.loggers import wandb_mode, wandb_run_id


@pytest.mark.slow
@needs_mnist
def test_offline_wandb_run_records_metrics_config_and_pictures(tmp_path, monkeypatch):
    for name in ("WANDB_MODE", "WANDB_SWEEP_ID", "WANDB_RUN_ID"):
        monkeypatch.delenv(name, raising=False)
    run_dir = tmp_path / "run"
    words = ["logger=wandb", *TINY_FIT, "model.latent_dim=7", f"run.dir={run_dir}"]
    assert main(words) == 0
    runs = list((run_dir / "wandb").glob("offline-run-*"))
    assert len(runs) == 1, "one offline W&B run in the run directory"
    assert runs[0].name.endswith(wandb_run_id(run_dir))
    pictures = list((runs[0] / "files" / "media" / "images").glob("*.png"))
    assert len(pictures) == 2  # samples and reconstructions
    # The run's transaction log holds the logged keys and the resolved config. W&B's service
    # process may write it after run.finish() returns (docs/testing.md#tolerances-and-waits),
    # so wait a bounded time.
    keys = (b"val/elbo", b"test/ll", b"test/elbo", b"latent_dim", str(SHARED_DATA).encode())
    log = next(runs[0].glob("run-*.wandb"))
    deadline = time.monotonic() + 60
    while not all(key in log.read_bytes() for key in keys) and time.monotonic() < deadline:
        time.sleep(0.5)
    records = log.read_bytes()
    for key in keys:
        assert key in records, key


def test_wandb_mode_offline_by_default_online_under_a_sweep_agent(monkeypatch):
    cfg = LoggerConfig()
    for name in ("WANDB_MODE", "WANDB_SWEEP_ID"):
        monkeypatch.delenv(name, raising=False)
    assert wandb_mode(cfg) == "offline"
    assert wandb_mode(LoggerConfig(mode=WandbMode.online)) == "online"
    monkeypatch.setenv("WANDB_SWEEP_ID", "abc123")
    assert wandb_mode(cfg) == "online"
    monkeypatch.setenv("WANDB_MODE", "offline")
    assert wandb_mode(cfg) == "offline"


def test_wandb_run_id_is_fixed_by_the_run_directory(tmp_path):
    assert wandb_run_id(tmp_path / "a") == wandb_run_id(tmp_path / "a")
    assert wandb_run_id(tmp_path / "a") != wandb_run_id(tmp_path / "b")
