"""Every executor gives the same numbers for the same seeds; Ray retries killed workers."""

import csv
import os
from dataclasses import replace

import pytest

from cellclass.training import ExperimentError, ExperimentSettings, run_experiment
from cellclass.training.recipes import REFERENCE

from .conftest import import_or_require, make_class_tree


@pytest.fixture
def settings(tmp_path):
    train = make_class_tree(tmp_path / "train", {"Control": 10, "Treated": 10})
    test = make_class_tree(tmp_path / "test", {"Control": 4, "Treated": 4}, seed=3)
    return ExperimentSettings(
        train_dir=str(train),
        out=str(tmp_path / "local"),
        tests=(("t", str(test)),),
        runs=3,
        image_size=32,
        cache_dir=str(tmp_path / "cache"),
        recipes=(replace(REFERENCE, epochs=2, batch_size=8),),
    )


def _numbers(out):
    with open(out / "runs.csv", newline="") as handle:
        rows = list(csv.DictReader(handle))
    return sorted(
        (r["run"], r["seed"], r["model"], r["dataset"], r["accuracy"], r["loss"]) for r in rows
    )


def test_process_pool_gives_the_local_numbers(settings, tmp_path):
    local = run_experiment(settings)
    pooled = run_experiment(
        replace(settings, out=str(tmp_path / "pool"), executor="process", jobs=2)
    )
    assert _numbers(pooled) == _numbers(local)
    assert sorted(p.name for p in (pooled / "models").iterdir()) == [
        "run-00.pt",
        "run-01.pt",
        "run-02.pt",
    ]


def test_unknown_executor_is_refused(settings):
    with pytest.raises(ExperimentError, match="executor=.slurm.: choose"):
        run_experiment(replace(settings, executor="slurm"))


def test_ray_missing_gives_install_hint(settings, monkeypatch):
    import builtins

    real_import = builtins.__import__

    def no_ray(name, *args, **kwargs):
        if name == "ray":
            raise ImportError("no ray")
        return real_import(name, *args, **kwargs)

    monkeypatch.setattr(builtins, "__import__", no_ray)
    with pytest.raises(ValueError, match=r"cellclass\[ray\]"):
        run_experiment(replace(settings, executor="ray"))


_KILL_MARKER = "CELLCLASS_TEST_KILL_ONCE"


def _dies_once(settings, job, data):
    """Ray task that kills its own worker the first time it runs job 1."""
    from pathlib import Path

    from cellclass.training.executors import _ray_job

    marker = Path(os.environ[_KILL_MARKER])
    if job.run == 1 and not marker.exists():
        marker.write_text("killed")
        os._exit(1)  # the worker process dies: a system failure Ray retries
    return _ray_job(settings, job, data)


def test_ray_gives_the_local_numbers_and_retries_a_killed_worker(settings, tmp_path, monkeypatch):
    ray = import_or_require("ray", "Ray (pip install -e '.[ray]')")
    import cellclass.training.executors as executors

    local = run_experiment(settings)
    marker = tmp_path / "killed-once"
    monkeypatch.setenv(_KILL_MARKER, str(marker))
    monkeypatch.setattr(executors, "_ray_job", _dies_once)
    ray.init(
        num_cpus=2,
        include_dashboard=False,
        log_to_driver=False,
        runtime_env={"env_vars": {_KILL_MARKER: str(marker)}},
    )
    try:
        out = run_experiment(replace(settings, out=str(tmp_path / "ray"), executor="ray"))
    finally:
        ray.shutdown()
    assert marker.read_text() == "killed"  # the first attempt of run 1 really died
    assert _numbers(out) == _numbers(local)


def test_ray_refuses_gpu_shares_on_a_cluster_without_gpus(settings, tmp_path):
    ray = import_or_require("ray", "Ray (pip install -e '.[ray]')")
    ray.init(num_cpus=1, num_gpus=0, include_dashboard=False, log_to_driver=False)
    try:
        with pytest.raises(ValueError, match="gpus_per_run=0.25: the Ray cluster has 0 GPU"):
            run_experiment(
                replace(settings, out=str(tmp_path / "ray"), executor="ray", gpus_per_run=0.25)
            )
    finally:
        ray.shutdown()
