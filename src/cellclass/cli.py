"""The ``cellclass`` command: argument parsing, progress display and exit codes.

Every command turns its arguments into library settings and calls one library function;
nothing here decides anything a notebook user could not do with the same calls.
Exit codes: 0 success, 2 bad input (one-line message, no traceback), 130 interrupted.
"""

from __future__ import annotations

import argparse
import re
import sys
import time
from pathlib import Path

from tqdm import tqdm

from cellclass import __version__

USER_ERRORS: tuple[type[Exception], ...] = (ValueError, FileExistsError, FileNotFoundError)


def _test_set(text: str) -> tuple[str, str]:
    """``NAME=DIR`` (or a bare DIR, named after its folder)."""
    if "=" in text:
        name, _, folder = text.partition("=")
        if not name or not folder:
            raise argparse.ArgumentTypeError(
                f"--test {text!r}: expected NAME=DIR, e.g. snap29=data/test"
            )
        return name, folder
    return Path(text).name, text


def _channels(text: str) -> tuple[int, ...]:
    from cellclass.images import parse_channels

    try:
        return parse_channels(text)
    except ValueError as error:
        raise argparse.ArgumentTypeError(str(error)) from None


def _positive(kind):
    def parse(text: str):
        value = kind(text)
        if value <= 0:
            raise argparse.ArgumentTypeError(f"must be positive, got {text}")
        return value

    return parse


def _non_negative(text: str) -> int:
    value = int(text)
    if value < 0:
        raise argparse.ArgumentTypeError(f"must be 0 or more, got {text}")
    return value


def _add_data_options(parser: argparse.ArgumentParser) -> None:
    group = parser.add_argument_group("loading images")
    group.add_argument(
        "--image-size", type=_positive(int), default=256, help="model input size (default 256)"
    )
    group.add_argument(
        "--channels",
        type=_channels,
        default=None,
        help="pick or map channels, 0-based: '1', '0,1,2', '0,0,0' (default: all)",
    )
    group.add_argument("--page", type=int, default=0, help="page of multi-page TIFFs (default 0)")
    group.add_argument(
        "--normalize",
        choices=("dataset", "image", "bitdepth"),
        default="dataset",
        help="dataset: training-set percentiles (keeps brightness differences); "
        "image: per-image percentiles; bitdepth: divide by the bit-depth maximum",
    )
    group.add_argument(
        "--skip-bad-images",
        action="store_true",
        help="leave unreadable images out (listed) instead of stopping",
    )
    group.add_argument(
        "--cache-dir", default=None, help="decoded-pixel cache (default ~/.cache/cellclass)"
    )


def _add_train_options(parser: argparse.ArgumentParser) -> None:
    group = parser.add_argument_group("experiment")
    group.add_argument(
        "--test",
        dest="tests",
        action="append",
        type=_test_set,
        default=[],
        metavar="NAME=DIR",
        help="test folder, evaluated after every epoch (repeatable)",
    )
    group.add_argument(
        "--out", required=True, help="results folder (must not exist, unless --resume)"
    )
    group.add_argument(
        "--runs", type=_positive(int), default=12, help="trainings from scratch (default 12)"
    )
    group.add_argument("--seed", type=int, default=0, help="seed of run 0; run k uses seed + k")
    group.add_argument(
        "--val-split",
        type=float,
        default=0.2,
        help="fraction held out for validation, by source group (default 0.2; 0 = none)",
    )
    group.add_argument(
        "--train-sample",
        type=_positive(int),
        default=None,
        metavar="N",
        help="study protocol: each run trains on a fresh random draw of N images",
    )
    group.add_argument(
        "--control-runs",
        type=_non_negative,
        default=0,
        metavar="K",
        help="also train K runs on shuffled labels: the chance distribution (default 0)",
    )
    group.add_argument(
        "--group-by",
        default=None,
        metavar="REGEX",
        help="regex on file names giving the source field (when there is no manifest.csv)",
    )
    group.add_argument(
        "--resume", action="store_true", help="continue an interrupted experiment in --out"
    )
    group.add_argument(
        "--explain",
        action="store_true",
        help="after training: attribution maps, calibration, adversarial and confound probes",
    )
    group.add_argument(
        "--strict",
        action="store_true",
        help="refuse to train when a test image duplicates a training image (else warn)",
    )
    model = parser.add_argument_group("model and training")
    model.add_argument(
        "--recipe",
        dest="recipes",
        action="append",
        default=[],
        metavar="NAME",
        help="training recipe: reference (the study, default) or strong; repeat to compare",
    )
    model.add_argument(
        "--model",
        dest="models",
        action="append",
        default=[],
        metavar="NAME",
        help="architecture trained with the reference recipe (see `cellclass models`); repeatable",
    )
    model.add_argument("--epochs", type=_positive(int), help="epochs per run (recipe default)")
    model.add_argument("--batch-size", type=_positive(int), help="batch size (recipe default)")
    model.add_argument("--learning-rate", type=_positive(float), help="peak learning rate")
    model.add_argument(
        "--baseline",
        dest="baselines",
        action="append",
        default=[],
        choices=("features",),
        help="also fit a classical baseline (intensity, spot and texture features + logistic "
        "regression) on the same splits",
    )
    model.add_argument(
        "--set",
        dest="overrides",
        action="append",
        default=[],
        metavar="[RECIPE:]KEY=VALUE",
        help="change a recipe field, e.g. --set strong:epochs=20 --set augment.dihedral=false",
    )
    model.add_argument(
        "--device",
        choices=("auto", "cpu", "cuda"),
        default="auto",
        help="auto uses CUDA when present",
    )
    model.add_argument(
        "--precision",
        choices=("auto", "fp32", "bf16"),
        default="auto",
        help="auto: fp32 on CPU (validated), bf16 autocast on capable GPUs",
    )
    where = parser.add_argument_group("where runs are computed (same numbers everywhere)")
    where.add_argument(
        "--executor",
        choices=("local", "process", "ray"),
        default="local",
        help="local: one run after another; process: --jobs runs at once; ray: a Ray cluster",
    )
    where.add_argument(
        "--jobs", type=_positive(int), default=1, help="processes for --executor process"
    )
    where.add_argument(
        "--ray-address",
        default=None,
        metavar="ADDRESS",
        help="Ray cluster to join (default: start a local one)",
    )
    where.add_argument(
        "--cpus-per-run", type=_positive(float), default=1.0, help="Ray CPUs per run"
    )
    where.add_argument(
        "--gpus-per-run",
        type=float,
        default=0.0,
        help="Ray GPU share per run, e.g. 0.25 packs four runs on a GPU",
    )


def _subparser_class(common: argparse.ArgumentParser):
    """A parser class whose instances inherit ``common``'s options (every subcommand)."""

    class Subparser(argparse.ArgumentParser):
        def __init__(self, *args, **kwargs):
            kwargs.setdefault("parents", [common])
            super().__init__(*args, **kwargs)

    return Subparser


def _fraction(text: str) -> float:
    value = float(text)
    if not 0.0 <= value <= 1.0:
        raise argparse.ArgumentTypeError(f"must be a fraction between 0 and 1, got {text}")
    return value


def _add_blind_parser(commands) -> None:
    blind = commands.add_parser("blind", help="blinded expert scoring of a test folder")
    actions = blind.add_subparsers(dest="blind_command", required=True, metavar="ACTION")
    serve = actions.add_parser("serve", help="start the blinded scoring page (until Ctrl-C)")
    serve.add_argument("test_dir", metavar="TEST_DIR", help="test folder, one subfolder per class")
    serve.add_argument("--db", required=True, help="SQLite file of answers (created or resumed)")
    scoring = serve.add_argument_group("scoring")
    scoring.add_argument("--scorer", default=None, help="score as NAME (default: the page asks)")
    scoring.add_argument(
        "--repeats", type=_fraction, default=0.0, metavar="FRACTION",
        help="show this fraction of images twice, for self-consistency (e.g. 0.1)",
    )  # fmt: skip
    scoring.add_argument("--seed", type=int, default=0, help="seed of each scorer's random order")
    images = serve.add_argument_group("images")
    images.add_argument(
        "--run", dest="run_dir", default=None, metavar="RUN_DIR",
        help="show the images exactly as this experiment's model sees them (recommended)",
    )  # fmt: skip
    images.add_argument(
        "--image-size", type=_positive(int), default=None,
        help="without --run: size to show the images at (default: native)",
    )  # fmt: skip
    images.add_argument("--skip-bad-images", action="store_true", help="leave unreadable out")
    images.add_argument("--cache-dir", default=None, help="decoded-pixel cache")
    server = serve.add_argument_group("server")
    server.add_argument(
        "--host", default="127.0.0.1",
        help="address to listen on (default 127.0.0.1: this computer only)",
    )  # fmt: skip
    server.add_argument("--port", type=int, default=8000, help="TCP port (default 8000; 0: any)")
    results = actions.add_parser("results", help="accuracy of each scorer; tidy CSV export")
    results.add_argument("--db", required=True, help="SQLite file of `blind serve`")
    results.add_argument("--csv", default=None, metavar="FILE", help="write one row per answer")


def _add_compare_parser(commands) -> None:
    compare = commands.add_parser("compare", help="human vs network on the same test images")
    compare.add_argument("run_dir", metavar="RUN_DIR", help="results folder of `cellclass train`")
    inputs = compare.add_argument_group("what to compare")
    inputs.add_argument("--human", required=True, metavar="DB", help="SQLite file of `blind serve`")
    inputs.add_argument(
        "--test", dest="test_name", required=True, metavar="NAME", help="test set in RUN_DIR"
    )
    inputs.add_argument("--scorer", default=None, help="whose answers (when DB holds several)")
    inputs.add_argument("--model", default=None, help="whose runs (when RUN_DIR holds several)")
    inputs.add_argument("--seed", type=int, default=0, help="seed of the bootstrap (default 0)")


def _add_prepare_parser(commands) -> None:
    prepare = commands.add_parser("prepare", help="tile or rotate a class-folder tree (manifest)")
    steps = prepare.add_subparsers(dest="prepare_command", required=True, metavar="STEP")
    tile = steps.add_parser("tile", help="cut every field into tiles, keeping dtype and format")
    rotate = steps.add_parser("rotate", help="write really rotated (and mirrored) copies")
    # argparse takes "-5:5:1" for an option; let it pass as a value, as it does "-5"
    rotate._negative_number_matcher = re.compile(r"^-\.?\d[\d.:,]*$")
    for step in (tile, rotate):
        step.add_argument("src", metavar="SRC", help="one subfolder per class")
        step.add_argument("dst", metavar="DST", help="output folder outside SRC; gets manifest.csv")
    size = tile.add_argument_group("tiles").add_mutually_exclusive_group(required=True)
    size.add_argument("--grid", type=_positive(int), metavar="N", help="N x N tiles per field")
    size.add_argument("--tile-size", type=_positive(int), metavar="PIXELS", help="square tiles")
    tiles = tile.add_argument_group("edges and background")
    tiles.add_argument(
        "--edge", choices=("drop", "pad"), default="drop",
        help="remainder that does not fill a tile: drop it, or pad by mirroring the field",
    )  # fmt: skip
    tiles.add_argument(
        "--min-foreground", type=float, default=0.0, metavar="F",
        help="drop tiles with less than this fraction of pixels above the field's Otsu "
        "threshold on log intensities (default 0: keep all)",
    )  # fmt: skip
    angles = rotate.add_argument_group("rotations")
    angles.add_argument(
        "--angles", required=True, metavar="SPEC",
        help="degrees counter-clockwise: 0,90,180,270 | -5:5:1 (end included) | step=18",
    )  # fmt: skip
    angles.add_argument(
        "--fill", choices=("reflect", "constant", "crop"), default="reflect",
        help="corners: mirror (default), 0, or crop every copy to the largest centred "
        "rectangle free of corners at all angles (one size, original pixel scale)",
    )  # fmt: skip
    angles.add_argument(
        "--flip", dest="flips", action="append", choices=("h", "v"), default=[],
        help="also write copies mirrored left-right (h) or top-bottom (v); repeatable",
    )  # fmt: skip
    for step in (tile, rotate):
        files = step.add_argument_group("files")
        files.add_argument("--page", type=int, default=0, help="page of multi-page TIFFs")
        files.add_argument(
            "--overwrite", action="store_true",
            help="replace this step's earlier outputs in DST (deletes nothing else)",
        )  # fmt: skip
        files.add_argument(
            "--skip-bad-images", action="store_true",
            help="list unreadable images and go on instead of stopping",
        )  # fmt: skip


def _add_inspect_parser(commands) -> None:
    inspect = commands.add_parser(
        "inspect",
        help="check a dataset: sizes, bit depth, confounds, bad files, duplicates, leakage",
    )
    inspect.add_argument("dir", metavar="DIR", help="training folder, one subfolder per class")
    inputs = inspect.add_argument_group("what to check")
    inputs.add_argument(
        "--against", action="extend", nargs="+", default=[], metavar="TEST_DIR",
        help="test folder(s): duplicates between DIR and them are reported as leakage",
    )  # fmt: skip
    inputs.add_argument(
        "--group-by", default=None, metavar="REGEX",
        help="regex on file names giving the source field (when there is no manifest.csv)",
    )  # fmt: skip
    inputs.add_argument("--page", type=int, default=0, help="page of multi-page TIFFs")
    limits = inspect.add_argument_group("thresholds and output")
    limits.add_argument(
        "--max-distance", type=int, default=32, metavar="BITS",
        help="near-duplicate: perceptual hashes differ in at most BITS of 255 (default 32)",
    )  # fmt: skip
    limits.add_argument(
        "--confound-effect", type=float, default=1.0, metavar="SD",
        help="flag class brightness differences above SD pooled SDs (default 1)",
    )  # fmt: skip
    limits.add_argument("--json", default=None, metavar="FILE", help="also write the report here")
    limits.add_argument(
        "--max-pairs", type=int, default=10, metavar="N",
        help="files and pairs listed per kind on screen (default 10; all are in --json)",
    )  # fmt: skip


EXPORT_FORMATS = ("torchscript", "onnx", "bioimageio")  # cellclass.export.FORMATS


def _add_export_parser(commands) -> None:
    export = commands.add_parser(
        "export", help="write one run as TorchScript, ONNX or a bioimage.io model package"
    )
    export.add_argument("run_dir", metavar="RUN_DIR", help="results folder of `cellclass train`")
    what = export.add_argument_group("what to export")
    what.add_argument("--run", type=int, required=True, metavar="N", help="run number (run-NN.pt)")
    what.add_argument(
        "--format", dest="fmt", required=True, choices=EXPORT_FORMATS,
        help="torchscript | onnx (needs cellclass[export]) | bioimageio (zip with both)",
    )  # fmt: skip
    what.add_argument("--model", default=None, help="model label, when RUN_DIR trained several")
    what.add_argument(
        "--out", default=None, metavar="PATH",
        help="file to write (bioimageio: .zip, else a folder); never overwritten "
        "(default RUN_DIR/export/run-NN-<model>.<format>)",
    )  # fmt: skip
    package = export.add_argument_group("bioimage.io package")
    package.add_argument("--name", default="", help="default 'cellclass <model> run NN'")
    package.add_argument("--description", default="", help="default: classes and image size")
    package.add_argument(
        "--author", dest="authors", action="append", default=[], metavar="NAME",
        help="who trained the model (repeatable)",
    )  # fmt: skip
    package.add_argument("--license", default="CC-BY-4.0", metavar="SPDX", help="of the weights")
    package.add_argument(
        "--sample-image", default=None, metavar="IMAGE",
        help="raw image for the package's test tensors and cover (default: synthetic pixels)",
    )  # fmt: skip


def _add_explain_parser(commands) -> None:
    explain = commands.add_parser(
        "explain",
        help="attribution maps, calibration, adversarial and confound probes of a results folder",
    )
    explain.add_argument("run_dir", metavar="RUN_DIR", help="results folder of `cellclass train`")
    explain.add_argument(
        "paths", metavar="PATH", nargs="*",
        help="images or folders to draw maps for (default: the test sets of RUN_DIR)",
    )  # fmt: skip
    what = explain.add_argument_group("what to explain")
    what.add_argument(
        "-o", "--out", default=None, metavar="DIR", help="output folder (default RUN_DIR/explain)"
    )
    what.add_argument("--run", type=int, default=None, metavar="N", help="run whose maps are drawn")
    what.add_argument("--model", default=None, help="model label, when RUN_DIR trained several")
    what.add_argument(
        "--test", dest="tests", action="append", default=[], metavar="NAME",
        help="test set of RUN_DIR to explain (repeatable; default: all)",
    )  # fmt: skip
    what.add_argument(
        "--images", type=_positive(int), default=None, metavar="N",
        help="images per test set in the attribution panels (default 8)",
    )  # fmt: skip
    what.add_argument(
        "--maps-only", action="store_true", help="only attribution maps: no calibration or probes"
    )
    what.add_argument("--seed", type=int, default=0, help="which images are drawn (default 0)")


def build_parser() -> argparse.ArgumentParser:
    parser = argparse.ArgumentParser(
        prog="cellclass",
        description="Can a neural network classify my microscopy images as well as I can, "
        "reproducibly?",
    )
    parser.add_argument("--version", action="version", version=f"cellclass {__version__}")
    parser.add_argument("--quiet", action="store_true", help="no progress bars")
    common = argparse.ArgumentParser(add_help=False)  # --quiet also accepted after the command
    common.add_argument(
        "--quiet", action="store_true", default=argparse.SUPPRESS, help="no progress bars"
    )
    commands = parser.add_subparsers(
        dest="command", required=True, metavar="COMMAND", parser_class=_subparser_class(common)
    )

    demo = commands.add_parser("demo", help="make synthetic demo data and run the study on it")
    demo.add_argument(
        "--out",
        default="cellclass-demo",
        help="folder for data and results (default ./cellclass-demo)",
    )
    # defaults live in cellclass.demo.DemoSettings; None means "use it"
    demo.add_argument("--runs", type=_positive(int), help="runs (default 3, reduced from 12)")
    demo.add_argument(
        "--n-train", type=_positive(int), help="training images per class (default 150)"
    )
    demo.add_argument("--n-test", type=_positive(int), help="test images per class (default 40)")
    demo.add_argument("--epochs", type=_positive(int), help="epochs per run (default 9)")
    demo.add_argument("--seed", type=int, help="seed of the data and the runs (default 0)")
    demo.add_argument("--image-size", type=_positive(int), help="model input size (default 128)")
    demo.add_argument(
        "--recipe",
        dest="recipes",
        action="append",
        metavar="NAME",
        help="recipe to run (default: reference and strong); repeat, e.g. --recipe reference",
    )

    train = commands.add_parser(
        "train", help="train the model many times and evaluate on test folders"
    )
    train.add_argument("train_dir", metavar="TRAIN_DIR", help="one subfolder per class")
    _add_train_options(train)
    _add_data_options(train)

    evaluate = commands.add_parser(
        "evaluate", help="evaluate every saved run on a new labelled folder"
    )
    evaluate.add_argument("run_dir", metavar="RUN_DIR")
    evaluate.add_argument(
        "--test", dest="tests", action="append", type=_test_set, required=True, metavar="NAME=DIR"
    )
    evaluate.add_argument("--skip-bad-images", action="store_true")
    evaluate.add_argument("--cache-dir", default=None)

    predict = commands.add_parser("predict", help="classify unlabelled images with the saved runs")
    predict.add_argument("run_dir", metavar="RUN_DIR")
    predict.add_argument("paths", metavar="PATH", nargs="+", help="image files or folders")
    predict.add_argument(
        "-o", "--output", default=None, help="write a CSV here (never overwritten)"
    )
    predict.add_argument("--run", type=int, default=None, help="use one run instead of all")
    predict.add_argument("--skip-bad-images", action="store_true")
    predict.add_argument("--cache-dir", default=None)

    report = commands.add_parser("report", help="(re)write report.html of a results folder")
    report.add_argument("run_dir", metavar="RUN_DIR")

    preview = commands.add_parser(
        "preview", help="5x5 grid of labelled images, as the model sees them"
    )
    preview.add_argument("folder", metavar="DIR", help="one subfolder per class")
    preview.add_argument(
        "-o", "--output", default="preview.png", help="PNG to write (never overwritten)"
    )
    preview.add_argument(
        "--n", type=_positive(int), default=25, help="images in the grid (default 25)"
    )
    preview.add_argument("--seed", type=int, default=0, help="which images are picked")
    _add_data_options(preview)

    models = commands.add_parser("models", help="list architectures, or summarise one")
    models.add_argument("name", nargs="?", help="architecture to describe")
    models.add_argument("--summary", action="store_true", help="Keras-style layer table")
    models.add_argument("--image-size", type=_positive(int), default=256)
    models.add_argument(
        "--channels", type=_positive(int), default=3, help="input channels (default 3)"
    )
    models.add_argument("--classes", type=_positive(int), default=2, help="classes (default 2)")
    _add_blind_parser(commands)
    _add_compare_parser(commands)
    _add_prepare_parser(commands)
    _add_inspect_parser(commands)
    _add_export_parser(commands)
    _add_explain_parser(commands)
    return parser


class ProgressObserver:
    """Prints experiment progress with tqdm bars (or plain lines when quiet)."""

    def __init__(self, quiet: bool):
        self.quiet = quiet
        self.bar = None
        self.run_label = ""

    def message(self, text: str) -> None:
        (self.bar.write if self.bar is not None else print)(text, file=sys.stderr)

    def decoding(self, name: str, total: int):
        if self.quiet:
            return None
        bar = tqdm(total=total, desc=f"decoding {name}", unit="img", leave=False)
        return lambda n: (bar.update(n), bar.n >= total and bar.close())

    def run_started(self, name: str, n_images: int) -> None:
        self.run_label = name
        self.started = time.perf_counter()
        if not self.quiet:
            self.bar = tqdm(total=n_images, desc=self.run_label, unit="img", leave=False)

    def batch(self, n_images: int) -> None:
        if self.bar is not None:
            self.bar.update(n_images)

    def epoch_finished(self, run: int, records) -> None:
        if self.bar is not None:
            parts = [f"{r.split} {r.accuracy:.0%}" for r in records]
            self.bar.set_description(f"{self.run_label} epoch {records[0].epoch}")
            self.bar.set_postfix_str(" ".join(parts))

    def run_finished(self, run: int, rows) -> None:
        if self.bar is not None:
            self.bar.close()
            self.bar = None
        tests = " ".join(f"{r['dataset']} {r['accuracy']:.1%}" for r in rows)
        seconds = time.perf_counter() - self.started
        print(
            f"{self.run_label} done in {seconds:.0f} s: {tests or 'no test sets'}", file=sys.stderr
        )


def _print_summary(table: list[dict]) -> None:
    if not table:
        print("no test sets: see epochs.csv for training and validation metrics")
        return
    header = f"{'model':<28}{'test set':<16}{'runs':>5}{'mean':>8}{'sd':>8}{'min':>8}{'max':>8}"
    print("\n" + header + ("  p vs control" if any("p_vs_control" in r for r in table) else ""))
    for row in table:
        sd = "" if row["sd"] != row["sd"] else f"{row['sd']:.1%}"
        line = (
            f"{row['model']:<28}{row['dataset']:<16}{row['n']:>5}{row['mean']:>8.1%}{sd:>8}"
            f"{row['min']:>8.1%}{row['max']:>8.1%}"
        )
        if "p_vs_control" in row:
            line += f"  {row['p_vs_control']:.3f}"
        print(line)


def _experiment_settings(args):
    from cellclass.experiment import ExperimentSettings
    from cellclass.recipes import resolve_recipes

    shortcuts = {
        "epochs": args.epochs,
        "batch_size": args.batch_size,
        "learning_rate": args.learning_rate,
    }
    overrides = [f"{key}={value}" for key, value in shortcuts.items() if value is not None]
    return ExperimentSettings(
        train_dir=args.train_dir,
        out=args.out,
        tests=tuple(args.tests),
        runs=args.runs,
        seed=args.seed,
        recipes=resolve_recipes(args.recipes, args.models, overrides + args.overrides),
        control_runs=args.control_runs,
        baselines=tuple(args.baselines),
        strict=args.strict,
        val_split=args.val_split,
        train_sample=args.train_sample,
        group_by=args.group_by,
        skip_bad_images=args.skip_bad_images,
        image_size=args.image_size,
        channels=args.channels,
        page=args.page,
        normalize=args.normalize,
        device=args.device,
        precision=args.precision,
        executor=args.executor,
        jobs=args.jobs,
        ray_address=args.ray_address,
        cpus_per_run=args.cpus_per_run,
        gpus_per_run=args.gpus_per_run,
        cache_dir=args.cache_dir,
    )


def _run_and_report(settings, *, resume: bool, quiet: bool, explain: bool = False) -> Path:
    from cellclass.experiment import run_experiment
    from cellclass.report import write_report
    from cellclass.summary import summary_table

    out = run_experiment(settings, resume=resume, observer=ProgressObserver(quiet))
    _print_summary(summary_table(out))
    _print_comparisons(out)
    if explain:
        from cellclass.explain_step import explain_run

        print(f"explanations: {explain_run(out)}")
    report = write_report(out)
    print(f"\nresults: {out}")
    for name in ("config.json", "runs.csv", "epochs.csv", "predictions.csv", "models", "figures"):
        print(f"  {out / name}")
    print(f"report: {report}")
    return out


def _print_comparisons(run_dir) -> None:
    from cellclass.summary import model_comparisons

    for row in model_comparisons(run_dir):
        line = (
            f"{row['first']} vs {row['second']} on {row['dataset']}: mean accuracy difference "
            f"{row['runs_difference']:+.1%} over runs (Welch p = {row['runs_p_value']:.3g})"
        )
        if "mcnemar_p" in row:
            line += (
                f"; ensembles {row['ensemble_difference']:+.1%} "
                f"(McNemar p = {row['mcnemar_p']:.3g})"
            )
        print(line)


def cmd_train(args) -> int:
    _run_and_report(
        _experiment_settings(args), resume=args.resume, quiet=args.quiet, explain=args.explain
    )
    return 0


def cmd_demo(args) -> int:
    from cellclass.demo import REDUCTION_NOTE, DemoSettings, prepare_demo

    keys = ("n_train", "n_test", "runs", "epochs", "seed", "image_size")
    given = {key: getattr(args, key) for key in keys}
    given["recipes"] = tuple(args.recipes) if args.recipes else None
    demo = DemoSettings(**{key: value for key, value in given.items() if value is not None})
    print(
        REDUCTION_NOTE.format(
            runs=demo.runs,
            n_train=demo.n_train,
            image_size=demo.image_size,
            strong_epochs=demo.strong_epochs,
        )
    )
    started = time.perf_counter()
    data, settings = prepare_demo(args.out, demo)
    print(
        f"demo data: {data.root} (train: {data.train}; tests: "
        + ", ".join(f"{k}={v}" for k, v in data.tests.items())
        + ")"
    )
    _run_and_report(settings, resume=False, quiet=args.quiet)
    print(f"demo finished in {time.perf_counter() - started:.0f} s")
    return 0


def cmd_evaluate(args) -> int:
    from cellclass.predict import evaluate_folder
    from cellclass.summary import summary_table

    for name, folder in args.tests:
        evaluate_folder(
            args.run_dir,
            name,
            folder,
            skip_bad=args.skip_bad_images,
            cache_dir=args.cache_dir,
            observer=ProgressObserver(args.quiet),
        )
    _print_summary(summary_table(args.run_dir))
    from cellclass.report import write_report

    print(f"report: {write_report(args.run_dir)}")
    return 0


def cmd_report(args) -> int:
    from cellclass.report import write_report

    print(f"report: {write_report(args.run_dir)}")
    return 0


def cmd_preview(args) -> int:
    from cellclass.experiment import ExperimentSettings
    from cellclass.report import preview_folder

    target = Path(args.output)
    if target.exists():
        raise FileExistsError(f"-o {target}: file exists; choose another name")
    settings = ExperimentSettings(
        train_dir=args.folder,
        out="",
        image_size=args.image_size,
        channels=args.channels,
        page=args.page,
        normalize=args.normalize,
        skip_bad_images=args.skip_bad_images,
        cache_dir=args.cache_dir,
    )
    print(f"preview: {preview_folder(settings, target, n_images=args.n, seed=args.seed)}")
    return 0


def cmd_predict(args) -> int:
    from cellclass import results
    from cellclass.predict import predict_paths, prediction_table_columns

    if args.output and Path(args.output).exists():
        raise FileExistsError(f"-o {args.output}: file exists; choose another name")
    rows = predict_paths(
        args.run_dir,
        args.paths,
        run=args.run,
        skip_bad=args.skip_bad_images,
        cache_dir=args.cache_dir,
    )
    classes = [key[2:] for key in rows[0] if key.startswith("p_")]
    if args.output:
        results.write_table(Path(args.output), prediction_table_columns(classes), rows)
        print(f"{len(rows)} predictions written to {args.output}")
        return 0
    print(f"{'predicted':<16}{'confidence':>11}{'agreement':>10}  path")
    for row in rows:
        share = f"{row['confidence']:>11.1%}{row['agreement']:>10.0%}"
        print(f"{row['predicted']:<16}{share}  {row['path']}")
    return 0


def cmd_models(args) -> int:
    from cellclass.models import MODELS, build_model, summary

    if args.name is None:
        for spec in MODELS.values():
            print(f"{spec.name:<14}{spec.description}")
        return 0
    model = build_model(
        args.name, in_channels=args.channels, n_classes=args.classes, image_size=args.image_size
    )
    if args.summary:
        print(summary(model, (args.channels, args.image_size, args.image_size)))
    else:
        print(f"{args.name}: {MODELS[args.name].description}")
    return 0


def cmd_blind(args) -> int:
    return {"serve": _cmd_blind_serve, "results": _cmd_blind_results}[args.blind_command](args)


def _cmd_blind_serve(args) -> int:
    from cellclass.blind import ServeSettings, open_server

    settings = ServeSettings(
        test_dir=args.test_dir, db=args.db, run_dir=args.run_dir, scorer=args.scorer,
        host=args.host, port=args.port, seed=args.seed, repeats=args.repeats,
        image_size=args.image_size, cache_dir=args.cache_dir, skip_bad=args.skip_bad_images,
    )  # fmt: skip
    server, lines = open_server(settings)
    print("\n".join(lines), flush=True)
    try:
        server.serve_forever()  # returns on Ctrl-C: werkzeug catches KeyboardInterrupt
    finally:
        server.server_close()
    print(f"\nstopped; every answer is saved in {args.db}")
    return 0


def _cmd_blind_results(args) -> int:
    from cellclass.blind import (
        answer_rows,
        format_scores,
        open_store,
        summarize_scores,
        write_answers_csv,
    )

    if args.csv and Path(args.csv).exists():
        raise FileExistsError(f"--csv {args.csv}: file exists; choose another name")
    store = open_store(args.db, create=False)
    print(format_scores(summarize_scores(store)))
    if args.csv:
        print(f"answers written to {write_answers_csv(args.csv, answer_rows(store))}")
    return 0


def cmd_compare(args) -> int:
    from cellclass.blind import compare_human, format_comparison, write_comparison

    comparison = compare_human(
        args.run_dir, args.human, args.test_name, scorer=args.scorer, model=args.model,
        seed=args.seed,
    )  # fmt: skip
    path = write_comparison(args.run_dir, comparison)
    print(format_comparison(comparison))
    print(f"\nwritten {path}; config.json now marks the expert on {args.test_name} "
          f"at {comparison['human']['accuracy']:.1%} (box plot)")  # fmt: skip
    return 0


def _progress_bar(description: str, quiet: bool):
    """A ``progress(done, total)`` callback drawing one tqdm bar per counting (None if quiet)."""
    if quiet:
        return None
    bars = []

    def update(done: int, total: int) -> None:
        if done == 1 or not bars:
            bars.append(tqdm(total=total, desc=description, unit="img", leave=False))
        bars[-1].update(done - bars[-1].n)
        if done >= total:
            bars[-1].close()

    return update


def cmd_prepare(args) -> int:
    from cellclass import prepare

    progress = _progress_bar(args.prepare_command, args.quiet)
    if args.prepare_command == "tile":
        settings = prepare.TileSettings(
            grid=args.grid, tile_size=args.tile_size, edge=args.edge,
            min_foreground=args.min_foreground, page=args.page, overwrite=args.overwrite,
            skip_bad=args.skip_bad_images,
        )  # fmt: skip
        result = prepare.tile_folder(args.src, args.dst, settings, progress=progress)
    else:
        settings = prepare.RotateSettings(
            angles=prepare.parse_angles(args.angles), fill=args.fill, flips=tuple(args.flips),
            page=args.page, overwrite=args.overwrite, skip_bad=args.skip_bad_images,
        )  # fmt: skip
        result = prepare.rotate_folder(args.src, args.dst, settings, progress=progress)
    print(prepare.format_result(result))
    return 0


def cmd_inspect(args) -> int:
    from cellclass.inspection import (
        InspectSettings,
        format_report,
        inspect_dataset,
        write_report_json,
    )

    settings = InspectSettings(
        group_by=args.group_by, page=args.page, max_distance=args.max_distance,
        confound_effect=args.confound_effect,
    )  # fmt: skip
    progress = _progress_bar("inspecting", args.quiet)
    report = inspect_dataset(args.dir, against=args.against, settings=settings, progress=progress)
    print(format_report(report, max_pairs=args.max_pairs))
    if args.json:
        print(f"\nreport written to {write_report_json(report, args.json)}")
    return 0


def cmd_export(args) -> int:
    from cellclass.export import TOLERANCE, PackageSettings, export_run

    package = PackageSettings(
        name=args.name, description=args.description, authors=tuple(args.authors),
        license=args.license, sample_image=args.sample_image,
    )  # fmt: skip
    path = export_run(
        args.run_dir, run=args.run, fmt=args.fmt, out=args.out, model=args.model, package=package
    )
    print(f"run {args.run} exported as {args.fmt}: {path}")
    print(f"checked: loaded back, outputs within {TOLERANCE} of the PyTorch model")
    return 0


def cmd_explain(args) -> int:
    from cellclass.explain_step import ExplainSettings, explain_run, explain_section

    given = {"run": args.run, "model": args.model, "n_images": args.images}
    settings = ExplainSettings(
        **{key: value for key, value in given.items() if value is not None},
        tests=tuple(args.tests), probes=not args.maps_only, seed=args.seed,
    )  # fmt: skip
    out = explain_run(args.run_dir, paths=args.paths, out_dir=args.out, settings=settings)
    section = explain_section(args.run_dir, out_dir=out)
    print("\n".join(section["notes"]))
    print(f"\nexplain outputs: {out} (figures/, CSV tables, explain.json)")
    return 0


COMMANDS = {
    "demo": cmd_demo,
    "train": cmd_train,
    "evaluate": cmd_evaluate,
    "predict": cmd_predict,
    "models": cmd_models,
    "blind": cmd_blind,
    "compare": cmd_compare,
    "prepare": cmd_prepare,
    "inspect": cmd_inspect,
    "export": cmd_export,
    "report": cmd_report,
    "preview": cmd_preview,
    "explain": cmd_explain,
}


def main(argv: list[str] | None = None) -> int:
    args = build_parser().parse_args(argv)
    try:
        return COMMANDS[args.command](args)
    except KeyboardInterrupt:
        print("\ninterrupted: finished runs are kept; continue with --resume", file=sys.stderr)
        return 130
    except USER_ERRORS as error:
        message = str(error).splitlines()[0] if str(error) else type(error).__name__
        print(f"cellclass: error: {message}", file=sys.stderr)
        return 2
