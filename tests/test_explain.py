"""Attribution maps on toy models whose answer is known, and the explain step end to end."""

import shutil
from dataclasses import replace

import numpy as np
import pytest
import torch
from torch import nn

from cellclass import results
from cellclass.cli import build_parser, main
from cellclass.explain import attribution as explain
from cellclass.explain.step import ExplainSettings, explain_run, explain_section
from cellclass.figures import explain as explain_figures
from cellclass.models.cnn import build_model
from cellclass.results import load_temperatures
from cellclass.training import ExperimentSettings, run_experiment
from cellclass.training.recipes import REFERENCE

from .conftest import make_class_tree

SIZE = 16
REGION = (slice(2, 6), slice(10, 14))  # rows, columns the toy model reads (patch-aligned)


class RegionModel(nn.Module):
    """Class 1 logit = 4 * (mean of the known region - 0.25); class 0 logit = 0.

    ``features`` is an identity 3x3 conv + ReLU, so Grad-CAM has a layer to read.
    """

    def __init__(self):
        super().__init__()
        self.features = nn.Sequential(nn.Conv2d(1, 1, 3, padding=1, bias=False), nn.ReLU())
        with torch.no_grad():
            self.features[0].weight.zero_()
            self.features[0].weight[0, 0, 1, 1] = 1.0
        mask = torch.zeros(SIZE, SIZE)
        mask[REGION] = 1.0
        self.register_buffer("mask", mask)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        region = (self.features(x)[:, 0] * self.mask).sum((1, 2)) / self.mask.sum()  # (B,)
        return torch.stack([torch.zeros_like(region), 4 * (region - 0.25)], dim=1)  # (B, 2)


def _images(*, distractor: bool, seed: int = 0) -> torch.Tensor:
    """(4, 1, SIZE, SIZE): dim noise, a bright square in the region, optionally another one."""
    generator = torch.Generator().manual_seed(seed)
    x = 0.1 * torch.rand(4, 1, SIZE, SIZE, generator=generator)  # (B, C, H, W)
    x[:, :, REGION[0], REGION[1]] += 0.8
    if distractor:
        x[:, :, 10:14, 1:5] += 0.8  # bright, but outside what the model reads
    return x.clamp(0, 1)


def _inside() -> np.ndarray:
    inside = np.zeros((SIZE, SIZE), bool)
    inside[REGION] = True
    return inside


@pytest.mark.parametrize("target", [0, 1])
def test_gradient_x_input_and_occlusion_agree_in_sign_on_the_region(target):
    model = RegionModel().eval()
    x = _images(distractor=True)
    targets = np.full(len(x), target)
    gradient = explain.gradient_x_input(model, x, targets)  # (B, H, W)
    hidden = explain.occlusion(model, x, targets, patch_size=2, stride=2)  # (B, H, W)
    inside = _inside()
    expected = 1.0 if target == 1 else -1.0  # the bright region is evidence for class 1
    assert np.all(np.sign(gradient[:, inside]) == expected)
    assert np.all(np.sign(hidden[:, inside]) == expected)
    assert np.abs(gradient[:, ~inside]).max() < 1e-6  # the distractor is ignored
    assert np.abs(hidden[:, ~inside]).max() < 1e-6


def test_grad_cam_highlights_the_region_the_model_reads():
    model = RegionModel().eval()
    cam = explain.grad_cam(model, _images(distractor=False), np.ones(4, int))  # (B, H, W)
    inside = _inside()
    assert cam.shape == (4, SIZE, SIZE) and (cam >= 0).all()
    assert (cam[:, inside].mean(1) > 4 * cam[:, ~inside].mean(1)).all()
    peaks = cam.reshape(4, -1).argmax(1)
    assert inside.ravel()[peaks].all()


def test_maps_leave_the_model_untouched():
    model = RegionModel().eval()
    before = {k: v.clone() for k, v in model.state_dict().items()}
    explain.explain_batch(model, _images(distractor=True), [1, 0, 1, 0], patch_size=4)
    assert all(p.grad is None for p in model.parameters())
    assert all(not m._forward_hooks for m in model.modules())
    assert all(torch.equal(before[k], v) for k, v in model.state_dict().items())


def test_explain_batch_in_chunks_equals_one_batch():
    model = RegionModel().eval()
    x = _images(distractor=True)
    whole = explain.explain_batch(model, x, [1, 1, 0, 0], patch_size=4, batch_size=4)
    chunks = explain.explain_batch(model, x, [1, 1, 0, 0], patch_size=4, batch_size=3)
    assert list(whole) == list(explain.METHODS)
    for name in whole:
        np.testing.assert_allclose(whole[name], chunks[name], atol=1e-6)


def test_class_score_is_the_margin_over_the_other_classes():
    logits = torch.tensor([[1.0, 3.0, 5.0], [2.0, 0.0, 0.0]])
    score = explain.class_score(logits, torch.tensor([2, 0]))
    np.testing.assert_allclose(score.numpy(), [5 - 2, 2 - 0])


@pytest.mark.parametrize("name", ["badger", "compact", "compact-fine"])
def test_grad_cam_reads_a_map_of_at_least_8x8_in_the_study_models(name):
    torch.manual_seed(0)
    model = build_model(name, in_channels=1, n_classes=2, image_size=64).eval()
    layers = explain.conv_layers(model)
    assert all(isinstance(layer, nn.ReLU) for layer in layers)
    seen = []
    handles = [
        layer.register_forward_hook(lambda m, i, o: seen.append(o.shape)) for layer in layers
    ]
    model(torch.rand(1, 1, 64, 64))
    for handle in handles:
        handle.remove()
    cam = explain.grad_cam(model, torch.rand(2, 1, 64, 64), [0, 1])
    assert cam.shape == (2, 64, 64) and np.isfinite(cam).all()
    assert min(seen[-1][2:]) < 8  # the very last conv layer would be too coarse


@pytest.mark.parametrize(
    "call, message",
    [
        (lambda m, x: explain.occlusion(m, x, [0] * 4, patch_size=99), "patch_size"),
        (lambda m, x: explain.gradient_x_input(m, x, [0, 1]), "targets"),
        (lambda m, x: explain.gradient_x_input(m, x[0], [0]), "(B, C, H, W)"),
        (lambda m, x: explain.explain_batch(m, x, [0] * 4, methods=["lime"]), "unknown"),
        (lambda m, x: explain.explain_batch(m, x, [0] * 4), "patch_size"),
        (lambda m, x: explain.grad_cam(nn.Sequential(nn.Flatten()).eval(), x, [0] * 4), "Conv2d"),
    ],
)
def test_bad_input_is_refused_with_a_specific_message(call, message):
    with pytest.raises(ValueError, match=message.replace("(", r"\(").replace(")", r"\)")):
        call(RegionModel().eval(), _images(distractor=False))


def test_training_mode_model_is_refused():
    with pytest.raises(ValueError, match="eval"):
        explain.grad_cam(RegionModel().train(), _images(distractor=False), [0] * 4)


def test_class_average_maps_weigh_every_image_equally_and_mark_empty_classes():
    maps = np.zeros((3, 4, 4), np.float32)
    maps[0, 0, 0] = 100.0  # one strong image must not dominate the average
    maps[1, 0, 0] = 1.0
    maps[2, 3, 3] = -2.0
    average = explain.class_average_maps(maps, [0, 0, 2], n_classes=3)
    assert average.shape == (3, 4, 4)
    assert average[0, 0, 0] == pytest.approx(1.0)
    assert np.isnan(average[1]).all()
    assert average[2, 3, 3] == pytest.approx(-1.0)
    with pytest.raises(ValueError, match="labels"):
        explain.class_average_maps(maps, [0, 5, 1], n_classes=3)


# ---------------------------------------------------------------- end to end
@pytest.fixture(scope="module")
def tiny_results(tmp_path_factory):
    """A results folder of one 2-epoch run on 32x32 images (10 validation images), one test set."""
    root = tmp_path_factory.mktemp("explain")
    train = make_class_tree(root / "train", {"Control": 25, "Treated": 25})
    test = make_class_tree(root / "test", {"Control": 6, "Treated": 6}, seed=9)
    settings = ExperimentSettings(
        train_dir=str(train),
        out=str(root / "out"),
        tests=(("t1", str(test)),),
        runs=1,
        seed=5,
        image_size=32,
        cache_dir=str(root / "cache"),
        recipes=(replace(REFERENCE, epochs=2, batch_size=8),),
    )
    return run_experiment(settings), test


FAST = ExplainSettings(
    n_images=4, n_average=8, n_adversarial=8, epsilons=(2 / 255, 8 / 255), patch_fraction=0.25
)


def test_explain_run_writes_tables_figures_calibration_and_the_report_section(tiny_results):
    run_dir, _ = tiny_results
    out = explain_run(run_dir, settings=FAST)
    assert out == run_dir / "explain"
    for name in ("calibration.csv", "adversarial.csv", "confound.csv", "loss_accuracy.csv"):
        assert results.read_table(out / name), name
    temperatures = load_temperatures(run_dir)
    assert list(temperatures) == [(0, "reference")] and temperatures[0, "reference"] > 0
    section = explain_section(run_dir)
    assert section["title"] and len(section["notes"]) >= 4
    titles = [figure["title"] for figure in section["figures"]]
    assert titles[:2] == ["Attribution maps: t1", "Per-class average maps: t1"]
    assert "Calibration: temperature scaling" in titles and "Learning is not minimisation" in titles
    for figure in section["figures"]:
        assert open(figure["path"], "rb").read(8) == b"\x89PNG\r\n\x1a\n"
        assert figure["caption"]
    adversarial = results.read_table(out / "adversarial.csv")
    assert {row["attack"] for row in adversarial} == {"FGSM", "random sign"}
    assert all(0 <= float(row["flipped"]) <= 1 for row in adversarial)


def test_unknown_run_or_test_set_is_a_specific_error(tiny_results):
    run_dir, _ = tiny_results
    with pytest.raises(ValueError, match="no such saved run"):
        explain_run(run_dir, settings=replace(FAST, run=7))
    with pytest.raises(ValueError, match="test set 'nope': not in .*it has"):
        explain_run(run_dir, settings=replace(FAST, tests=("nope",)))


def test_section_of_an_unexplained_folder_says_what_to_run(tmp_path):
    with pytest.raises(FileNotFoundError, match="cellclass explain"):
        explain_section(tmp_path)


def test_cli_explains_images_named_by_path(tiny_results, tmp_path, capsys):
    run_dir, test = tiny_results
    out = tmp_path / "cli"
    argv = [
        "explain",
        str(run_dir),
        str(test / "Treated"),
        str(test / "Control" / "Control_000.png"),
    ]
    assert main([*argv, "-o", str(out), "--maps-only", "--images", "3", "--quiet"]) == 0
    assert str(out) in capsys.readouterr().out
    record = results.read_json(out / "explain.json")
    assert [figure["file"] for figure in record["figures"]] == [
        "figures/attribution-images.png",
        "figures/average-images.png",
    ]
    assert not (out / "adversarial.csv").exists()  # --maps-only
    assert main(["explain", str(run_dir), "--test", "nope", "-o", str(out)]) == 2
    assert "test set 'nope': not in" in capsys.readouterr().err


def test_cli_explain_arguments():
    args = build_parser().parse_args(
        ["explain", "runs/a", "img.png", "-o", "x", "--run", "2", "--test", "t1", "--maps-only"]
    )
    assert (args.command, args.run_dir, args.paths, args.out) == (
        "explain",
        "runs/a",
        ["img.png"],
        "x",
    )
    assert (args.run, args.tests, args.maps_only, args.images) == (2, ["t1"], True, None)
    assert build_parser().parse_args(["explain", "runs/a"]).paths == []
    assert (
        build_parser().parse_args(["explain", "a", "--adversarial-runs", "12"]).adversarial_runs
        == 12
    )
    with pytest.raises(SystemExit):  # argparse: "--adversarial-runs: must be positive"
        build_parser().parse_args(["explain", "a", "--adversarial-runs", "0"])


def test_bad_settings_are_refused_before_any_work(tmp_path):
    with pytest.raises(ValueError, match="explain settings: n_images"):
        explain_run(tmp_path, settings=replace(FAST, n_images=0))
    with pytest.raises(ValueError, match="epsilons"):
        explain_run(tmp_path, settings=replace(FAST, epsilons=(0.0,)))


def test_overlay_is_an_rgb_image_and_the_figure_checks_its_rows(tmp_path):
    image = np.random.default_rng(0).random((8, 8, 1)).astype(np.float32)
    signed = np.linspace(-1, 1, 64).reshape(8, 8)
    for picture in (
        explain_figures.overlay(image, signed, signed=True),
        explain_figures.overlay(image, np.zeros((8, 8)), signed=False),
    ):
        assert picture.shape == (8, 8, 3) and 0 <= picture.min() and picture.max() <= 1
    row = explain_figures.MapRow("maps", np.zeros((2, 8, 8)), signed=True)
    with pytest.raises(ValueError, match="row 'maps' has 2 maps for 1 images"):
        explain_figures.attribution_figure(image[None], [row], [("a", "black")], tmp_path / "a.png")
    path = explain_figures.attribution_figure(
        np.stack([image, image]), [row], [("a", "black"), ("b", "red")], tmp_path / "b.png"
    )
    assert path.read_bytes()[:4] == b"\x89PNG"


def test_report_panels_show_calibrated_confidence_once_a_temperature_is_fitted(
    tiny_results, tmp_path
):
    from cellclass.explain import probes
    from cellclass.report.build import calibrated_rows, read_results, write_report

    run_dir = tmp_path / "copy"  # without what other tests' `explain_run` wrote
    ignore = shutil.ignore_patterns("explain", results.CALIBRATION_FILE)
    shutil.copytree(tiny_results[0], run_dir, ignore=ignore)
    assert "softmax confidence (uncalibrated" in write_report(run_dir).read_text()
    probes.write_calibration(run_dir, {(0, "reference"): probes.Calibration(3.0, 0.2, 0.1, 10)})
    html = write_report(run_dir).read_text()
    assert "calibrated confidence (temperature 3.00" in html
    data = read_results(run_dir)
    rows = [r for r in data.predictions if r["run"] == 0]
    scaled = calibrated_rows(rows, data.config["class_names"], 3.0)
    for before, after in zip(rows, scaled, strict=True):
        assert after["predicted"] == before["predicted"]
        assert 0.5 <= after["confidence"] <= before["confidence"] + 1e-9  # T > 1 softens
        assert after["p_Control"] + after["p_Treated"] == pytest.approx(1.0)


def test_report_puts_attribution_maps_beside_the_prediction_panels(tiny_results, tmp_path):
    from cellclass.report.build import write_report

    run_dir = tmp_path / "copy"
    shutil.copytree(tiny_results[0], run_dir, ignore=shutil.ignore_patterns("explain"))
    explain_run(run_dir, settings=FAST)
    html = write_report(run_dir).read_text()
    section = html.index("Test set: t1")
    panels = html.index("<b>Predictions (run ", section)  # the run of median accuracy
    attribution = html.index("<b>Attribution maps: t1.</b>", section)
    confusion = html.index("<b>Confusion matrix.</b>", section)
    assert section < panels < attribution < confusion
    assert "(explain/figures/" in html  # the figure's real place, relative to the folder
    assert html.count("<b>Attribution maps: t1.</b>") == 1  # moved, not copied
    assert "beside its prediction panels" in html
