"""The ``cellclass`` command: argument parsing, progress display and exit codes.

Every command turns its arguments into library settings and calls one library function;
nothing here decides anything a notebook user could not do with the same calls.
Exit codes: 0 success, 2 bad input (one-line message, no traceback), 130 interrupted.
"""

from __future__ import annotations

import argparse
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
        "--group-by",
        default=None,
        metavar="REGEX",
        help="regex on file names giving the source field (when there is no manifest.csv)",
    )
    group.add_argument(
        "--resume", action="store_true", help="continue an interrupted experiment in --out"
    )
    model = parser.add_argument_group("model and training")
    model.add_argument("--model", default="badger", help="architecture (see `cellclass models`)")
    model.add_argument(
        "--epochs", type=_positive(int), default=9, help="epochs per run (default 9)"
    )
    model.add_argument(
        "--batch-size", type=_positive(int), default=20, help="batch size (default 20)"
    )
    model.add_argument(
        "--learning-rate", type=_positive(float), default=1e-3, help="Adam learning rate"
    )
    model.add_argument(
        "--device",
        choices=("auto", "cpu", "cuda"),
        default="auto",
        help="auto uses CUDA when present",
    )


def _subparser_class(common: argparse.ArgumentParser):
    """A parser class whose instances inherit ``common``'s options (every subcommand)."""

    class Subparser(argparse.ArgumentParser):
        def __init__(self, *args, **kwargs):
            kwargs.setdefault("parents", [common])
            super().__init__(*args, **kwargs)

    return Subparser


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
    demo.add_argument("--runs", type=_positive(int), default=3, help="runs (default 3, reduced)")
    demo.add_argument(
        "--n-train", type=_positive(int), default=80, help="training images per class (default 80)"
    )
    demo.add_argument(
        "--n-test", type=_positive(int), default=40, help="test images per class (default 40)"
    )
    demo.add_argument("--epochs", type=_positive(int), default=9)
    demo.add_argument("--seed", type=int, default=0)

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

    models = commands.add_parser("models", help="list architectures, or summarise one")
    models.add_argument("name", nargs="?", help="architecture to describe")
    models.add_argument("--summary", action="store_true", help="Keras-style layer table")
    models.add_argument("--image-size", type=_positive(int), default=256)
    models.add_argument(
        "--channels", type=_positive(int), default=3, help="input channels (default 3)"
    )
    models.add_argument("--classes", type=_positive(int), default=2, help="classes (default 2)")
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

    def run_started(self, run: int, n_runs: int, n_images: int) -> None:
        self.run_label = f"run {run + 1}/{n_runs}"
        self.started = time.perf_counter()
        if not self.quiet:
            self.bar = tqdm(total=None, desc=self.run_label, unit="img", leave=False)

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
    print(f"\n{'model':<14}{'test set':<16}{'runs':>5}{'mean':>8}{'sd':>8}{'min':>8}{'max':>8}")
    for row in table:
        sd = "" if row["sd"] != row["sd"] else f"{row['sd']:.1%}"
        print(
            f"{row['model']:<14}{row['dataset']:<16}{row['n']:>5}{row['mean']:>8.1%}{sd:>8}"
            f"{row['min']:>8.1%}{row['max']:>8.1%}"
        )


def _experiment_settings(args):
    from cellclass.experiment import ExperimentSettings
    from cellclass.train import TrainSettings

    return ExperimentSettings(
        train_dir=args.train_dir,
        out=args.out,
        tests=tuple(args.tests),
        runs=args.runs,
        seed=args.seed,
        val_split=args.val_split,
        train_sample=args.train_sample,
        group_by=args.group_by,
        skip_bad_images=args.skip_bad_images,
        image_size=args.image_size,
        channels=args.channels,
        page=args.page,
        normalize=args.normalize,
        cache_dir=args.cache_dir,
        train=TrainSettings(
            model=args.model,
            epochs=args.epochs,
            batch_size=args.batch_size,
            learning_rate=args.learning_rate,
            device=args.device,
        ),
    )


def _run_and_report(settings, *, resume: bool, quiet: bool) -> Path:
    from cellclass.experiment import run_experiment, summary_table

    out = run_experiment(settings, resume=resume, observer=ProgressObserver(quiet))
    _print_summary(summary_table(out))
    print(f"\nresults: {out}")
    for name in ("config.json", "runs.csv", "epochs.csv", "predictions.csv", "models"):
        print(f"  {out / name}")
    return out


def cmd_train(args) -> int:
    _run_and_report(_experiment_settings(args), resume=args.resume, quiet=args.quiet)
    return 0


def cmd_demo(args) -> int:
    from cellclass.demo import REDUCTION_NOTE, DemoSettings, prepare_demo

    demo = DemoSettings(
        n_train=args.n_train, n_test=args.n_test, runs=args.runs, epochs=args.epochs, seed=args.seed
    )
    print(REDUCTION_NOTE.format(runs=demo.runs, n_train=demo.n_train))
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
    from cellclass.experiment import summary_table
    from cellclass.predict import evaluate_folder

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


COMMANDS = {
    "demo": cmd_demo,
    "train": cmd_train,
    "evaluate": cmd_evaluate,
    "predict": cmd_predict,
    "models": cmd_models,
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
