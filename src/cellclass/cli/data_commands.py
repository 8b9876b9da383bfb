"""``cellclass prepare``, ``inspect``, ``preview`` and ``models``: look at data and models.

The commands used before training: cut or rotate a class-folder tree, check a dataset, show
images as the model sees them, and list or summarise the architectures.
"""

from __future__ import annotations

import re
from pathlib import Path

from cellclass import choices
from cellclass.cli.arguments import add_data_options, positive
from cellclass.cli.display import progress_bar
from cellclass.cli.errors import for_terminal


def add_preview_parser(commands) -> None:
    """``cellclass preview``: a grid of labelled images."""
    preview = commands.add_parser(
        "preview", help="5x5 grid of labelled images, as the model sees them"
    )
    preview.add_argument("folder", metavar="DIR", help="one subfolder per class")
    preview.add_argument(
        "-o", "--out", default="preview.png", metavar="FILE",
        help="PNG to write (default preview.png; never overwritten)",
    )  # fmt: skip
    preview.add_argument(
        "--n", type=positive(int), default=25, help="images in the grid (default 25)"
    )
    preview.add_argument("--seed", type=int, default=0, help="which images are picked")
    add_data_options(preview)


def add_models_parser(commands) -> None:
    """``cellclass models``: list architectures, or summarise one."""
    models = commands.add_parser("models", help="list architectures, or summarise one")
    models.add_argument("name", nargs="?", help="architecture to describe")
    models.add_argument("--summary", action="store_true", help="Keras-style layer table")
    models.add_argument(
        "--image-size", type=positive(int), default=256, help="input size (default 256)"
    )
    models.add_argument(
        "--channels", type=positive(int), default=3, help="input channels (default 3)"
    )
    models.add_argument("--classes", type=positive(int), default=2, help="classes (default 2)")


def add_prepare_parser(commands) -> None:
    prepare = commands.add_parser(
        "prepare", help="tile, rotate or split a class-folder tree (manifest)"
    )
    steps = prepare.add_subparsers(
        dest="prepare_command", required=True, metavar="STEP", help="tile, rotate or split"
    )
    tile = steps.add_parser("tile", help="cut every field into tiles, keeping dtype and format")
    rotate = steps.add_parser("rotate", help="write really rotated (and mirrored) copies")
    # argparse takes "-5:5:1" for an option; let it pass as a value, as it does "-5"
    rotate._negative_number_matcher = re.compile(r"^-\.?\d[\d.:,]*$")
    for step in (tile, rotate):
        step.add_argument("src", metavar="SRC", help="one subfolder per class")
        step.add_argument("dst", metavar="DST", help="output folder outside SRC; gets manifest.csv")
    size = tile.add_argument_group("tiles").add_mutually_exclusive_group(required=True)
    size.add_argument("--grid", type=positive(int), metavar="N", help="N x N tiles per field")
    size.add_argument("--tile-size", type=positive(int), metavar="PIXELS", help="square tiles")
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
    add_split_parser(steps)


def add_split_parser(steps) -> None:
    split = steps.add_parser(
        "split",
        help="copy into DST/train and DST/test, keeping source fields and duplicates together",
    )
    split.add_argument("src", metavar="SRC", help="one subfolder per class (only read)")
    split.add_argument("dst", metavar="DST", help="gets train/ and test/, each with manifest.csv")
    split.add_argument(
        "--test-fraction", type=float, default=0.25, metavar="F",
        help="share of each class's images for test/ (default 0.25; whole groups, so about)",
    )  # fmt: skip
    split.add_argument("--seed", type=int, default=0, help="the same seed gives the same split")
    split.add_argument(
        "--group-by", metavar="REGEX",
        help="regex on file names giving the source field (when SRC has no manifest.csv)",
    )  # fmt: skip
    split.add_argument(
        "--allow-twins", action="store_true",
        help="do not look for duplicates: split by source field alone (faster)",
    )  # fmt: skip
    split.add_argument("--page", type=int, default=0, help="page of multi-page TIFFs")


def add_inspect_parser(commands) -> None:
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
    inputs.add_argument("--page", type=int, default=choices.PAGE, help="page of multi-page TIFFs")
    limits = inspect.add_argument_group("thresholds and output")
    limits.add_argument(
        "--max-distance", type=int, default=choices.MAX_DISTANCE, metavar="BITS",
        help="near-duplicate candidate: perceptual hashes differ in at most BITS of 255, then "
        f"the pixels are compared (default {choices.MAX_DISTANCE})",
    )  # fmt: skip
    limits.add_argument(
        "--min-similarity", type=float, default=choices.MIN_SIMILARITY, metavar="R",
        help="near-duplicate: the aligned thumbnails correlate at least R "
        f"(default {choices.MIN_SIMILARITY}; -1: the hash alone decides)",
    )  # fmt: skip
    limits.add_argument(
        "--confound-effect", type=float, default=choices.CONFOUND_EFFECT, metavar="SD",
        help="flag class brightness differences above SD pooled SDs "
        f"(default {choices.CONFOUND_EFFECT:g})",
    )  # fmt: skip
    limits.add_argument(
        "-o", "--out", default=None, metavar="FILE", help="also write the report here, as JSON"
    )
    limits.add_argument(
        "--max-pairs", type=int, default=10, metavar="N",
        help="files and pairs listed per kind on screen (default 10; all are in --out)",
    )  # fmt: skip


def cmd_preview(args) -> int:
    from cellclass.report.build import preview_folder
    from cellclass.training import ExperimentSettings

    target = Path(args.out)
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


def cmd_models(args) -> int:
    from cellclass.models.cnn import MODELS, build_model, summary

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


def cmd_prepare(args) -> int:
    import cellclass.prepare as prepare

    progress = progress_bar(args.prepare_command, args.quiet)
    if args.prepare_command == "split":
        import cellclass.inspection as inspection

        settings = inspection.SplitSettings(
            test_fraction=args.test_fraction, seed=args.seed, group_by=args.group_by,
            twins=not args.allow_twins, page=args.page,
        )  # fmt: skip
        split = inspection.split_folder(args.src, args.dst, settings, progress=progress)
        print(for_terminal(inspection.format_split(split)))
        return 0
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
    print(for_terminal(prepare.format_result(result)))
    return 0


def cmd_inspect(args) -> int:
    from cellclass.inspection.dataset import (
        InspectSettings,
        format_report,
        inspect_dataset,
        write_report_json,
    )

    settings = InspectSettings(
        group_by=args.group_by, page=args.page, max_distance=args.max_distance,
        confound_effect=args.confound_effect, min_similarity=args.min_similarity,
    )  # fmt: skip
    progress = progress_bar("inspecting", args.quiet)
    report = inspect_dataset(args.dir, against=args.against, settings=settings, progress=progress)
    print(for_terminal(format_report(report, max_pairs=args.max_pairs)))
    if args.out:
        print(f"\nreport written to {write_report_json(report, args.out)}")
    return 0
