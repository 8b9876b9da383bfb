"""The CUDA path on a real GPU: skipped where none is present (CI, the development machines).

These run where `torch.cuda.is_available()`; the issue 7 note says on which GPU and with
which result. The device choice itself is tested without a GPU in test_train.py.
"""

import csv
import json
import os
import time
from dataclasses import replace
from pathlib import Path

import numpy as np
import pytest
import torch

from cellclass.cli import main
from cellclass.models.cnn import build_model
from cellclass.training import ExperimentSettings, run_experiment
from cellclass.training.augment import AugmentSettings, augment_batch
from cellclass.training.recipes import REFERENCE, STRONG
from cellclass.training.train import autocast_dtype, predict_logits, resolve_device, train_run

from .conftest import make_class_tree
from .test_train import NORM, _splits

pytestmark = pytest.mark.skipif(not torch.cuda.is_available(), reason="needs a CUDA GPU")


def test_auto_device_takes_the_gpu():
    device = resolve_device("auto")
    assert device.type == "cuda"
    assert autocast_dtype("auto", device) is None  # bf16 was measured slower at batch 20


def test_augmentations_on_the_gpu_match_the_cpu():
    x = torch.rand(6, 2, 16, 16, generator=torch.Generator().manual_seed(0))
    settings = AugmentSettings(dihedral=True, intensity=0.2, contrast=0.2, crop=0.75)
    cpu = augment_batch(x, settings, torch.Generator().manual_seed(3))
    gpu = augment_batch(x.cuda(), settings, torch.Generator().manual_seed(3))
    assert gpu.device.type == "cuda"
    torch.testing.assert_close(gpu.cpu(), cpu, atol=1e-5, rtol=1e-5)


def test_gpu_inference_matches_the_cpu():
    _, val = _splits()
    torch.manual_seed(0)
    model = build_model("badger", in_channels=1, n_classes=2, image_size=32)
    cpu = predict_logits(model, val, NORM, batch_size=4)
    gpu = predict_logits(model.cuda(), val, NORM, batch_size=4)
    np.testing.assert_allclose(gpu, cpu, atol=1e-3, rtol=1e-2)  # TF32 convolutions


@pytest.mark.parametrize("precision", ["fp32", "bf16"])
def test_gpu_training_learns_and_the_same_seed_gives_the_same_numbers(precision):
    train, val = _splits()
    recipe = replace(STRONG, epochs=10, batch_size=10, warmup_epochs=1)  # BN settles

    def run():
        return train_run(
            train, [val], recipe, norm=NORM, n_classes=2, seed=0, device="cuda",
            precision=precision,
        )  # fmt: skip

    first, second = run(), run()
    assert next(first.model.parameters()).device.type == "cpu"  # handed back on the CPU
    assert first.final["val"].accuracy >= 0.8
    assert [(r.split, r.loss, r.accuracy) for r in first.epochs] == [
        (r.split, r.loss, r.accuracy) for r in second.epochs
    ]
    for a, b in zip(
        first.model.state_dict().values(), second.model.state_dict().values(), strict=True
    ):
        assert torch.equal(a, b)


def test_train_command_uses_the_gpu_and_records_it(tmp_path):
    train = make_class_tree(tmp_path / "train", {"Control": 10, "Treated": 10})
    test = make_class_tree(tmp_path / "test", {"Control": 4, "Treated": 4}, seed=3)
    out = tmp_path / "run"
    code = main(
        ["train", str(train), "--test", f"t={test}", "--out", str(out), "--runs", "2",
         "--epochs", "2", "--image-size", "32", "--cache-dir", str(tmp_path / "cache")]
    )  # fmt: skip
    assert code == 0
    machine = json.loads((out / "config.json").read_text())["machine"]
    assert machine["device"] == "cuda"
    assert machine["cuda"] == torch.cuda.get_device_name(0)
    with open(out / "runs.csv", newline="") as handle:
        assert len(list(csv.DictReader(handle))) == 2


_TRACE = "CELLCLASS_TEST_GPU_TRACE"


def _traced(settings, job, data):
    """Ray task: note when it ran and which GPU Ray gave it, then train as usual."""
    import ray

    from cellclass.training.executors import _ray_job

    started = time.time()
    time.sleep(2)  # long enough for packed tasks to overlap
    result = _ray_job(settings, job, data)
    trace = {
        "start": started,
        "end": time.time(),
        "gpus": [str(g) for g in ray.get_gpu_ids()],
        "visible": os.environ.get("CUDA_VISIBLE_DEVICES"),
    }
    Path(os.environ[_TRACE], f"run-{job.run}.json").write_text(json.dumps(trace))
    return result


def test_ray_packs_quarter_gpu_runs_onto_one_gpu(tmp_path, monkeypatch):
    ray = pytest.importorskip("ray")
    import cellclass.training.executors as executors

    train = make_class_tree(tmp_path / "train", {"Control": 10, "Treated": 10})
    test = make_class_tree(tmp_path / "test", {"Control": 4, "Treated": 4}, seed=3)
    settings = ExperimentSettings(
        train_dir=str(train),
        out=str(tmp_path / "local"),
        tests=(("t", str(test)),),
        runs=4,
        image_size=32,
        cache_dir=str(tmp_path / "cache"),
        recipes=(replace(REFERENCE, epochs=2, batch_size=8),),
        device="cuda",
    )
    local = run_experiment(settings)
    traces = tmp_path / "traces"
    traces.mkdir()
    monkeypatch.setenv(_TRACE, str(traces))
    monkeypatch.setattr(executors, "_ray_job", _traced)
    ray.init(
        num_cpus=4,
        num_gpus=1,
        include_dashboard=False,
        log_to_driver=False,
        runtime_env={"env_vars": {_TRACE: str(traces)}},
    )
    try:
        packed = run_experiment(
            replace(settings, out=str(tmp_path / "ray"), executor="ray", gpus_per_run=0.25)
        )
    finally:
        ray.shutdown()
    runs = [json.loads(p.read_text()) for p in sorted(traces.glob("run-*.json"))]
    assert len(runs) == 4
    assert all(r["gpus"] == ["0"] for r in runs)  # every run got a share of the one GPU
    overlap = max(sum(r["start"] <= t["start"] < r["end"] for r in runs) for t in runs)
    assert overlap >= 2  # shares of one GPU ran at the same time
    assert _rows(packed) == _rows(local)  # deterministic kernels: the local numbers


def _rows(out):
    with open(out / "runs.csv", newline="") as handle:
        rows = list(csv.DictReader(handle))
    return sorted((r["run"], r["seed"], r["dataset"], r["accuracy"], r["loss"]) for r in rows)
