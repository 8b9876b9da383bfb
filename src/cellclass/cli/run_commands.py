"""``cellclass demo``, ``train``, ``evaluate``, ``predict`` and ``report``: run the study.

Training and the commands that use a results folder's saved runs: their arguments, the
`cellclass.training.ExperimentSettings` built from them, and what is printed afterwards.
"""

from __future__ import annotations

import argparse
import time
from pathlib import Path

from cellclass import choices
from cellclass.cli.arguments import add_data_options, non_negative, positive
from cellclass.cli.display import ProgressObserver, print_summary


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


def add_demo_parser(commands) -> None:
    """``cellclass demo``: synthetic data, then the study on it."""
    demo = commands.add_parser("demo", help="make synthetic demo data and run the study on it")
    demo.add_argument(
        "-o",
        "--out",
        default="cellclass-demo",
        metavar="DIR",
        help="folder for data and results (default ./cellclass-demo)",
    )
    # defaults live in cellclass.demo.DemoSettings; None means "use it"
    demo.add_argument("--runs", type=positive(int), help="runs (default 3, reduced from 12)")
    demo.add_argument(
        "--n-train", type=positive(int), help="training images per class (default 150)"
    )
    demo.add_argument("--n-test", type=positive(int), help="test images per class (default 40)")
    demo.add_argument(
        "--epochs", type=positive(int), help="epochs of each reference run (default 9, the study's)"
    )
    demo.add_argument(
        "--strong-epochs", type=positive(int), help="epochs of each strong run (default 15)"
    )
    demo.add_argument("--seed", type=int, help="seed of the data and the runs (default 0)")
    demo.add_argument("--image-size", type=positive(int), help="model input size (default 128)")
    demo.add_argument(
        "--recipe",
        dest="recipes",
        action="append",
        metavar="NAME",
        help="recipe to run (default: reference and strong); repeat, e.g. --recipe reference",
    )


def add_train_parser(commands) -> None:
    """``cellclass train``: many runs, evaluated on test folders."""
    train = commands.add_parser(
        "train", help="train the model many times and evaluate on test folders"
    )
    train.add_argument("train_dir", metavar="TRAIN_DIR", help="one subfolder per class")
    _add_train_options(train)
    add_data_options(train)


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
        "--test-every",
        type=positive(int),
        default=choices.TEST_EVERY,
        metavar="N",
        help="evaluate test folders after every N-th epoch and the last only (default 1); "
        "the per-epoch test curves get fewer points, final results are the same",
    )
    group.add_argument(
        "-o",
        "--out",
        required=True,
        metavar="DIR",
        help="results folder to create (must not exist, unless --resume)",
    )
    group.add_argument(
        "--runs",
        type=positive(int),
        default=choices.RUNS,
        help=f"trainings from scratch (default {choices.RUNS})",
    )
    group.add_argument(
        "--seed", type=int, default=choices.SEED, help="seed of run 0; run k uses seed + k"
    )
    group.add_argument(
        "--val-split",
        type=float,
        default=choices.VAL_SPLIT,
        help=f"fraction held out for validation, by source group (default {choices.VAL_SPLIT}; "
        "0 = none)",
    )
    group.add_argument(
        "--train-sample",
        type=positive(int),
        default=None,
        metavar="N",
        help="study protocol: each run trains on a fresh random draw of N images",
    )
    group.add_argument(
        "--control-runs",
        type=non_negative,
        default=choices.CONTROL_RUNS,
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
    model.add_argument("--epochs", type=positive(int), help="epochs per run (recipe default)")
    model.add_argument("--batch-size", type=positive(int), help="batch size (recipe default)")
    model.add_argument("--learning-rate", type=positive(float), help="peak learning rate")
    model.add_argument(
        "--baseline",
        dest="baselines",
        action="append",
        default=[],
        choices=choices.BASELINES,
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
        choices=choices.DEVICES,
        default=choices.DEVICES[0],
        help="auto uses CUDA when present",
    )
    model.add_argument(
        "--precision",
        choices=choices.PRECISIONS,
        default=choices.PRECISIONS[0],
        help="auto: bf16 autocast where it was measured faster at equal accuracy for the model "
        "on CPUs like this one (recorded in config.json), else fp32; bf16: always autocast",
    )
    where = parser.add_argument_group("where runs are computed (same numbers everywhere)")
    where.add_argument(
        "--executor",
        choices=choices.EXECUTORS,
        default=choices.EXECUTORS[0],
        help="local: one run after another; process: --jobs runs at once; ray: a Ray cluster",
    )
    where.add_argument(
        "--jobs", type=positive(int), default=choices.JOBS, help="processes for --executor process"
    )
    where.add_argument(
        "--ray-address",
        default=None,
        metavar="ADDRESS",
        help="Ray cluster to join (default: start a local one)",
    )
    where.add_argument(
        "--cpus-per-run",
        type=positive(float),
        default=choices.CPUS_PER_RUN,
        help="Ray CPUs per run",
    )
    where.add_argument(
        "--gpus-per-run",
        type=float,
        default=choices.GPUS_PER_RUN,
        help="Ray GPU share per run, e.g. 0.25 packs four runs on a GPU",
    )


def add_evaluate_parser(commands) -> None:
    """``cellclass evaluate``: saved runs on a new labelled folder."""
    evaluate = commands.add_parser(
        "evaluate", help="evaluate every saved run on a new labelled folder"
    )
    evaluate.add_argument("run_dir", metavar="RUN_DIR", help="results folder of `cellclass train`")
    evaluate.add_argument(
        "--test", dest="tests", action="append", type=_test_set, required=True,
        metavar="NAME=DIR", help="labelled test folder to add as test set NAME (repeatable)",
    )  # fmt: skip
    _add_image_options(evaluate)


def add_predict_parser(commands) -> None:
    """``cellclass predict``: saved runs on unlabelled images."""
    predict = commands.add_parser("predict", help="classify unlabelled images with the saved runs")
    predict.add_argument("run_dir", metavar="RUN_DIR", help="results folder of `cellclass train`")
    predict.add_argument("paths", metavar="PATH", nargs="+", help="image files or folders")
    predict.add_argument(
        "-o", "--out", default=None, metavar="FILE", help="write a CSV here (never overwritten)"
    )
    predict.add_argument(
        "--run", type=int, default=None, metavar="N", help="use run N only instead of all"
    )
    predict.add_argument(
        "--model",
        default=None,
        metavar="NAME",
        help="the model (recipe) whose runs predict; needed when the folder holds several",
    )
    _add_image_options(predict)


def _add_image_options(parser: argparse.ArgumentParser) -> None:
    """--skip-bad-images and --cache-dir of the commands that read images with saved runs."""
    parser.add_argument(
        "--skip-bad-images",
        action="store_true",
        help="leave unreadable images out (listed) instead of stopping",
    )
    parser.add_argument(
        "--cache-dir", default=None, help="decoded-pixel cache (default ~/.cache/cellclass)"
    )


def add_report_parser(commands) -> None:
    """``cellclass report``: (re)write report.html."""
    report = commands.add_parser("report", help="(re)write report.html of a results folder")
    report.add_argument("run_dir", metavar="RUN_DIR", help="results folder of `cellclass train`")


def _experiment_settings(args):
    from cellclass.training import ExperimentSettings
    from cellclass.training.recipes import resolve_recipes

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
        test_every=args.test_every,
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
    from cellclass.study import run_study

    study = run_study(settings, resume=resume, explain=explain, observer=ProgressObserver(quiet))
    _print_study(study)
    return study.out


def _print_study(study) -> None:
    print_summary(study.summary)
    _print_comparisons(study.comparisons)
    if study.explain is not None:
        print(f"explanations: {study.explain}")
    print(f"\nresults: {study.out}")
    for name in ("config.json", "runs.csv", "epochs.csv", "predictions.csv", "models", "figures"):
        print(f"  {study.out / name}")
    print(f"report: {study.report}")


def _print_comparisons(comparisons: list[dict]) -> None:
    for row in comparisons:
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
    from cellclass.demo import REDUCTION_NOTE, DemoSettings
    from cellclass.study import run_demo

    keys = ("n_train", "n_test", "runs", "epochs", "strong_epochs", "seed", "image_size")
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

    def show(name, study):
        print(f"\n=== {name}: its own experiment ===")
        _print_study(study)

    result = run_demo(args.out, demo, observer=ProgressObserver(args.quiet), on_study=show)
    print("\nthe answer:")
    for finding in result.findings:
        print(f"  {finding.dataset}: {finding.sentence}")
    print(f"\nreport over both datasets: {result.report}")
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
    print_summary(summary_table(args.run_dir))
    from cellclass.report.build import write_report

    print(f"report: {write_report(args.run_dir)}")
    return 0


def cmd_report(args) -> int:
    from cellclass.report.build import write_report

    print(f"report: {write_report(args.run_dir)}")
    return 0


def cmd_predict(args) -> int:
    from cellclass import results
    from cellclass.predict import predict_paths, prediction_table_columns

    if args.out and Path(args.out).exists():
        raise FileExistsError(f"-o {args.out}: file exists; choose another name")
    rows = predict_paths(
        args.run_dir,
        args.paths,
        run=args.run,
        model=args.model,
        skip_bad=args.skip_bad_images,
        cache_dir=args.cache_dir,
        observer=ProgressObserver(args.quiet),  # says which runs voted
    )
    classes = [key[2:] for key in rows[0] if key.startswith("p_")]
    if args.out:
        results.write_table(Path(args.out), prediction_table_columns(classes), rows)
        print(f"{len(rows)} predictions written to {args.out}")
        return 0
    print(f"{'predicted':<16}{'confidence':>11}{'agreement':>10}  path")
    for row in rows:
        share = f"{row['confidence']:>11.1%}{row['agreement']:>10.0%}"
        print(f"{row['predicted']:<16}{share}  {row['path']}")
    return 0
