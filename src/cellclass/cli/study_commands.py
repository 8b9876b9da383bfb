"""``cellclass blind``, ``compare``, ``export`` and ``explain``: study a results folder.

Blinded expert scoring and the human-versus-network comparison, exporting a run for other
tools, and attribution maps and probes of what the network learned.
"""

from __future__ import annotations

from pathlib import Path

from cellclass.cli.arguments import fraction, non_negative, positive
from cellclass.cli.errors import for_terminal


def add_blind_parser(commands) -> None:
    blind = commands.add_parser("blind", help="blinded expert scoring of a test folder")
    actions = blind.add_subparsers(
        dest="blind_command", required=True, metavar="ACTION", help="serve or results"
    )
    serve = actions.add_parser("serve", help="start the blinded scoring page (until Ctrl-C)")
    serve.add_argument("test_dir", metavar="TEST_DIR", help="test folder, one subfolder per class")
    serve.add_argument(
        "run_dir", metavar="RUN_DIR", nargs="?", default=None,
        help="results folder of `cellclass train`: show the images exactly as its model sees "
        "them, with a button for each of its classes in TEST_DIR (recommended)",
    )  # fmt: skip
    serve.add_argument("--db", required=True, help="SQLite file of answers (created or resumed)")
    scoring = serve.add_argument_group("scoring")
    scoring.add_argument("--scorer", default=None, help="score as NAME (default: the page asks)")
    scoring.add_argument(
        "--repeats", type=fraction, default=0.0, metavar="FRACTION",
        help="show this fraction of images twice, for self-consistency (e.g. 0.1)",
    )  # fmt: skip
    scoring.add_argument(
        "--seed", type=non_negative, default=None,
        help="reproducible orders: each scorer's order from SEED and their name, so anyone "
        "who knows SEED can compute it (default: secret random orders)",
    )  # fmt: skip
    images = serve.add_argument_group("images")
    images.add_argument(
        "--image-size", type=positive(int), default=None,
        help="without RUN_DIR: size to show the images at (default: native)",
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
    results.add_argument(
        "-o", "--out", default=None, metavar="FILE", help="write a CSV, one row per answer"
    )


def add_compare_parser(commands) -> None:
    compare = commands.add_parser("compare", help="human vs network on the same test images")
    compare.add_argument("run_dir", metavar="RUN_DIR", help="results folder of `cellclass train`")
    inputs = compare.add_argument_group("what to compare")
    inputs.add_argument(
        "--human", dest="db", required=True, metavar="DB", help="SQLite file of `blind serve`"
    )
    inputs.add_argument(
        "--test", dest="test_name", required=True, metavar="NAME", help="test set in RUN_DIR"
    )
    inputs.add_argument("--scorer", default=None, help="whose answers (when DB holds several)")
    inputs.add_argument("--model", default=None, help="whose runs (when RUN_DIR holds several)")
    inputs.add_argument("--seed", type=int, default=0, help="seed of the bootstrap (default 0)")


EXPORT_FORMATS = ("torchscript", "onnx", "bioimageio")  # cellclass.export.runs.FORMATS


def add_export_parser(commands) -> None:
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
        "-o", "--out", default=None, metavar="PATH",
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


def add_explain_parser(commands) -> None:
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
        "--images", type=positive(int), default=None, metavar="N",
        help="images per test set in the attribution panels (default 8)",
    )  # fmt: skip
    what.add_argument(
        "--adversarial-runs", type=positive(int), default=None, metavar="N",
        help="runs per model attacked in the FGSM sweep (default 3; CPU time grows with it)",
    )  # fmt: skip
    what.add_argument(
        "--maps-only", action="store_true", help="only attribution maps: no calibration or probes"
    )
    what.add_argument("--seed", type=int, default=0, help="which images are drawn (default 0)")


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
    print(for_terminal("\n".join(lines)), flush=True)
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

    if args.out and Path(args.out).exists():
        raise FileExistsError(f"-o {args.out}: file exists; choose another name")
    store = open_store(args.db, create=False)
    print(format_scores(summarize_scores(store)))
    if args.out:
        print(f"answers written to {write_answers_csv(args.out, answer_rows(store))}")
    return 0


def cmd_compare(args) -> int:
    from cellclass.blind import compare_human, format_comparison, write_comparison

    comparison = compare_human(
        args.run_dir, args.db, args.test_name, scorer=args.scorer, model=args.model,
        seed=args.seed,
    )  # fmt: skip
    path = write_comparison(args.run_dir, comparison)
    print(format_comparison(comparison))
    print(f"\nwritten {path}; config.json now marks the expert on {args.test_name} "
          f"at {comparison['human']['accuracy']:.1%} (box plot)")  # fmt: skip
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
    from cellclass.explain.step import ExplainSettings, explain_run, explain_section

    given = {
        "run": args.run,
        "model": args.model,
        "n_images": args.images,
        "adversarial_runs": args.adversarial_runs,
    }
    settings = ExplainSettings(
        **{key: value for key, value in given.items() if value is not None},
        tests=tuple(args.tests), probes=not args.maps_only, seed=args.seed,
    )  # fmt: skip
    out = explain_run(args.run_dir, paths=args.paths, out_dir=args.out, settings=settings)
    section = explain_section(args.run_dir, out_dir=out)
    print("\n".join(section["notes"]))
    print(f"\nexplain outputs: {out} (figures/, CSV tables, explain.json)")
    return 0
