"""End-to-end runs of the `cellclass` command on tiny images."""

import csv
import json
import subprocess
import sys

import pytest

from cellclass.cli import build_parser, main

from .conftest import make_class_tree

TRAIN_ARGS = ["--runs", "2", "--epochs", "2", "--batch-size", "8", "--image-size", "32", "--quiet"]


@pytest.fixture
def folders(tmp_path):
    train = make_class_tree(tmp_path / "train", {"Control": 10, "Treated": 10})
    test = make_class_tree(tmp_path / "test", {"Control": 4, "Treated": 4}, seed=3)
    return train, test


def _train(tmp_path, train, test, *extra):
    argv = [
        "train",
        str(train),
        "--test",
        f"heldout={test}",
        "--out",
        str(tmp_path / "run"),
        "--cache-dir",
        str(tmp_path / "cache"),
        *TRAIN_ARGS,
        *extra,
    ]
    return main(argv)


def test_train_evaluate_predict_end_to_end(tmp_path, folders, capsys):
    train, test = folders
    assert _train(tmp_path, train, test) == 0
    out = capsys.readouterr().out
    assert "heldout" in out and "mean" in out  # the summary table
    run = tmp_path / "run"
    html = (run / "report.html").read_text()
    assert "data:image/png;base64" in html and "heldout" in html
    assert any((run / "figures").glob("*.png"))
    extra = make_class_tree(tmp_path / "extra", {"Treated": 3}, seed=4)
    assert (
        main(
            [
                "--quiet",
                "evaluate",
                str(run),
                "--test",
                f"extra={extra}",
                "--cache-dir",
                str(tmp_path / "cache"),
            ]
        )
        == 0
    )
    with open(run / "runs.csv", newline="") as handle:
        datasets = [r["dataset"] for r in csv.DictReader(handle)]
    assert datasets.count("extra") == 2 and datasets.count("heldout") == 2
    capsys.readouterr()
    for name in ("extra", "val"):  # evaluated already, or the validation curves' name
        again = ["--quiet", "evaluate", str(run), "--test", f"{name}={extra}"]
        assert main([*again, "--cache-dir", str(tmp_path / "cache")]) == 2
        error = capsys.readouterr().err
        assert error.count("\n") == 1 and f"test set '{name}'" in error
    with open(run / "runs.csv", newline="") as handle:  # no duplicate rows appended
        assert [r["dataset"] for r in csv.DictReader(handle)] == datasets
    target = tmp_path / "pred.csv"
    assert (
        main(
            [
                "predict",
                str(run),
                str(extra),
                "-o",
                str(target),
                "--cache-dir",
                str(tmp_path / "cache"),
            ]
        )
        == 0
    )
    with open(target, newline="") as handle:
        rows = list(csv.DictReader(handle))
    assert len(rows) == 3
    assert {"predicted", "confidence", "agreement", "p_Control", "p_Treated"} <= set(rows[0])
    assert all(float(r["agreement"]) in (0.5, 1.0) for r in rows)
    assert main(["predict", str(run), str(extra), "-o", str(target)]) == 2  # never overwritten


def test_refuses_existing_results_folder_without_resume(tmp_path, folders, capsys):
    train, test = folders
    assert _train(tmp_path, train, test) == 0
    capsys.readouterr()
    assert _train(tmp_path, train, test) == 2
    err = capsys.readouterr().err
    assert "--resume" in err and "Traceback" not in err
    assert _train(tmp_path, train, test, "--resume") == 0


@pytest.mark.parametrize(
    ("setup", "expected"),
    [
        ("corrupt", "broken.png"),
        ("unknown_class", "'Mystery'"),
        ("one_class", "only one class"),
        ("missing", "not a folder"),
    ],
)
def test_bad_input_gives_one_line_error_and_exit_2(tmp_path, folders, capsys, setup, expected):
    train, test = folders
    if setup == "corrupt":
        (train / "Control" / "broken.png").write_bytes(b"\x89PNG\r\n\x1a\n garbage")
    elif setup == "unknown_class":
        make_class_tree(test, {"Mystery": 1})
    elif setup == "one_class":
        train = make_class_tree(tmp_path / "single", {"Control": 3})
    elif setup == "missing":
        train = tmp_path / "nope"
    assert _train(tmp_path, train, test) == 2
    err = capsys.readouterr().err
    errors = [line for line in err.splitlines() if line.startswith("cellclass: error:")]
    assert len(errors) == 1 and expected in errors[0]
    assert "Traceback" not in err


def test_bad_flag_is_rejected(capsys):
    with pytest.raises(SystemExit) as info:
        main(["train", "x", "--out", "y", "--runs", "0"])
    assert info.value.code == 2
    assert "--runs" in capsys.readouterr().err


def test_models_summary_prints_the_study_total(capsys):
    assert main(["models", "badger", "--summary"]) == 0
    assert "Total params: 154,882" in capsys.readouterr().out
    assert main(["models"]) == 0
    assert "badger-deep" in capsys.readouterr().out


def test_parser_is_importable_and_lists_commands():
    parser = build_parser()
    text = parser.format_help()
    for command in ("demo", "train", "evaluate", "predict", "models"):
        assert command in text


def test_python_dash_m_runs():
    done = subprocess.run(
        [sys.executable, "-m", "cellclass", "--version"], capture_output=True, text=True, check=True
    )
    assert done.stdout.startswith("cellclass ")


def test_leakage_between_train_and_test_warns_or_refuses_with_strict(tmp_path, folders, capsys):
    import numpy as np
    from PIL import Image

    train, test = folders
    source = np.array(Image.open(train / "Treated" / "Treated_000.png"))
    Image.fromarray(np.rot90(source)).save(test / "Treated" / "copied.png")
    assert _train(tmp_path, train, test, "--strict") == 2
    err = capsys.readouterr().err
    errors = [line for line in err.splitlines() if line.startswith("cellclass: error:")]
    assert len(errors) == 1 and "leak" in errors[0] and "copied.png" in errors[0]
    assert not (tmp_path / "run").exists()
    assert _train(tmp_path, train, test) == 0
    assert "warning: test images leak" in capsys.readouterr().err
    from cellclass.results import read_json

    (pair,) = read_json(tmp_path / "run" / "config.json")["leakage"]
    assert pair[1].endswith("copied.png")


def test_report_is_regenerated_and_preview_written(tmp_path, folders, capsys):
    train, test = folders
    assert _train(tmp_path, train, test) == 0
    report = tmp_path / "run" / "report.html"
    report.unlink()
    assert main(["report", str(tmp_path / "run")]) == 0
    assert report.is_file()
    target = tmp_path / "grid.png"
    argv = [
        "preview",
        str(train),
        "-o",
        str(target),
        "--image-size",
        "32",
        "--cache-dir",
        str(tmp_path / "cache"),
    ]
    assert main(argv) == 0
    from PIL import Image

    assert Image.open(target).size[0] > 200
    assert main(argv) == 2  # never overwritten
    assert "exists" in capsys.readouterr().err


def test_demo_end_to_end_on_a_tiny_budget(tmp_path, capsys):
    out = tmp_path / "demo"
    argv = [
        "demo",
        "--out",
        str(out),
        "--n-train",
        "6",
        "--n-test",
        "3",
        "--runs",
        "1",
        "--epochs",
        "1",
        "--strong-epochs",
        "2",
        "--image-size",
        "32",
        "--quiet",
    ]
    assert main(argv) == 0
    printed = capsys.readouterr().out
    assert "reduced protocol" in printed and "the answer:" in printed
    for name in ("snap29", "snf7"):  # the study's design: one binary experiment per dataset
        config = json.loads((out / "results" / name / "config.json").read_text())
        assert config["class_names"] == ["Control", {"snap29": "Snap29", "snf7": "Snf7"}[name]]
        assert list(config["tests"]) == [name]
        assert (out / "results" / name / "report.html").is_file()
        assert f"{name}: reference reaches" in printed and f"{name}: strong reaches" in printed
        epochs = (out / "results" / name / "epochs.csv").read_text().splitlines()[1:]
        last = {}  # model -> its last epoch: --epochs is the reference's, --strong-epochs strong's
        for line in epochs:
            row = dict(zip(("run", "model", "epoch"), line.split(",")[:3], strict=True))
            last[row["model"]] = max(last.get(row["model"], 0), int(row["epoch"]))
        assert last == {"reference": 1, "strong": 2}
    page = (out / "results" / "report.html").read_text()
    assert "The answer" in page and 'href="snap29/report.html"' in page
    assert main(argv) == 2  # never overwrites an earlier demo


def test_hidden_and_non_image_files_are_reported(tmp_path, folders, capsys):
    train, test = folders
    (train / ".DS_Store").write_bytes(b"\0")
    (train / "Control" / "._Control_000.png").write_bytes(b"\0")
    (train / "Control" / "notes.txt").write_text("x")
    assert _train(tmp_path, train, test) == 0
    err = capsys.readouterr().err
    assert "train: 20 images (Control 10, Treated 10)" in err
    assert "2 hidden/phantom entries ignored, 1 non-image files not loaded" in err


def test_train_with_explain_adds_the_section_to_the_report(tmp_path, folders):
    train, test = folders
    assert _train(tmp_path, train, test, "--explain") == 0
    run = tmp_path / "run"
    assert (run / "explain" / "explain.json").is_file()
    html = (run / "report.html").read_text()
    assert 'id="explain"' in html


def test_train_flags_default_to_the_library_settings():
    """Issue 16: the command line and the library take choices and defaults from
    `cellclass.choices` (torch-free, so --help loads no torch); nothing may drift apart."""
    from dataclasses import fields

    from cellclass.cli import build_parser
    from cellclass.inspection.dataset import InspectSettings
    from cellclass.training import ExperimentSettings

    args = build_parser().parse_args(["train", "some/folder", "--out", "results"])
    library = {f.name: f.default for f in fields(ExperimentSettings)}
    shared = sorted(set(vars(args)) & set(library) - {"train_dir", "out", "tests", "recipes"})
    assert len(shared) >= 15, shared
    given = {k: tuple(v) if isinstance(v, list) else v for k, v in vars(args).items()}
    assert {k: given[k] for k in shared} == {k: library[k] for k in shared}
    inspect = build_parser().parse_args(["inspect", "some/folder"])
    assert inspect.max_distance == InspectSettings.max_distance
    assert inspect.min_similarity == InspectSettings.min_similarity
    assert inspect.confound_effect == InspectSettings.confound_effect


# ------------------------------------------------------------ one vocabulary (issue 20)


def _all_parsers(parser=None, name="cellclass"):
    """(name, parser) of the top-level parser and every command and sub-command."""
    import argparse

    parser = parser or build_parser()
    yield name, parser
    for action in parser._actions:
        if isinstance(action, argparse._SubParsersAction):
            for command, sub in action.choices.items():
                yield from _all_parsers(sub, f"{name} {command}")


WRITERS = [  # every command that writes a file or folder the user names
    "demo", "train", "predict", "preview", "inspect", "blind results", "export", "explain",
]  # fmt: skip


def test_every_argument_of_every_command_has_help():
    missing = [
        f"{name}: {action.option_strings or action.dest}"
        for name, parser in _all_parsers()
        for action in parser._actions
        if not (action.help or "").strip()
    ]
    assert not missing


def test_no_command_accepts_abbreviated_flags():
    parsers = dict(_all_parsers())
    assert len(parsers) >= 16  # 13 commands, blind serve/results, prepare tile/rotate
    assert [name for name, parser in parsers.items() if parser.allow_abbrev] == []


@pytest.mark.parametrize(
    ("argv", "line"),
    [
        (["train", "x", "--epoch", "3", "-o", "y"], "argument --epoch; did you mean --epochs?"),
        (["train", "x", "--otu", "y"], "did you mean --out?"),  # before 'required: --out'
        (["predict", "r", "img.png", "--modle", "strong"], "did you mean --model?"),
        (["blind", "serve", "t", "--skip-bad", "--db", "d"], "did you mean --skip-bad-images?"),
        (["prepare", "rotate", "a", "b", "--angles", "-5:5", "--fil", "crop"], "mean --fill?"),
        (["predict", "r", "img.png", "--output", "p.csv"], "--output; it is now -o/--out"),
        (["blind", "serve", "t", "--run", "r", "--db", "d"], "give the results folder as RUN_DIR"),
    ],
)  # fmt: skip
def test_a_misspelled_flag_is_one_line_naming_the_closest(capsys, argv, line):
    with pytest.raises(SystemExit) as info:
        main(argv)
    assert info.value.code == 2
    err = capsys.readouterr().err
    assert err.count("\n") == 1 and line in err and err.startswith("cellclass ")
    assert "usage:" not in err and "Traceback" not in err


def test_values_that_look_like_flags_are_left_to_argparse():
    args = build_parser().parse_args(["prepare", "rotate", "a", "b", "--angles", "-5:5:1"])
    assert args.angles == "-5:5:1"
    from cellclass.cli import unknown_flag

    assert unknown_flag(build_parser(), ["predict", "r", "--", "--odd-file-name.png"]) is None
    assert unknown_flag(build_parser(), ["predict", "r", "x", "-ofile.csv"]) is None  # -o file


@pytest.mark.parametrize("command", WRITERS)
def test_every_command_that_writes_takes_dash_o_out(command):
    parser = dict(_all_parsers())[f"cellclass {command}"]
    actions = parser._option_string_actions
    assert actions["-o"] is actions["--out"], command
    assert not {"--output", "--json", "--csv"} & set(actions), command


def test_a_results_folder_is_always_run_dir_and_a_run_always_dash_dash_run_n():
    for name, parser in _all_parsers():
        for action in parser._actions:
            if action.dest == "run_dir":
                assert not action.option_strings and action.metavar == "RUN_DIR", name
            if "--run" in action.option_strings:
                assert action.type is int and action.metavar == "N", name
    serve = build_parser().parse_args(["blind", "serve", "tests/a", "runs/b", "--db", "s.db"])
    assert (serve.test_dir, serve.run_dir) == ("tests/a", "runs/b")


def test_every_command_line_in_the_readme_parses():
    import re
    import shlex
    from pathlib import Path

    readme = (Path(__file__).resolve().parents[1] / "README.md").read_text(encoding="utf-8")
    blocks = re.findall(r"```bash\n(.*?)```", readme, re.S)
    lines = [line for block in blocks for line in block.splitlines()]
    commands = [
        shlex.split(line, comments=True)[1:] for line in lines if line.startswith("cellclass ")
    ]
    assert len(commands) >= 12
    for argv in commands:
        from cellclass.cli import unknown_flag

        assert unknown_flag(build_parser(), argv) is None, argv
        build_parser().parse_args(argv)  # exits 2 on a bad line


def test_inspect_passes_min_similarity_to_the_leakage_check(tmp_path, folders, capsys):
    """Issue 18: the pixel check's threshold is a flag; the library's limit reads as the flag."""
    import numpy as np
    from PIL import Image
    from scipy import ndimage

    from .conftest import write_png

    train, _ = folders
    assert main(["inspect", str(train), "--min-similarity", "2"]) == 2
    assert "--min-similarity 2.0: give a correlation from -1 to 1" in capsys.readouterr().err
    test = tmp_path / "alike"  # each training image blurred: its layout, not its pixels
    for source in sorted(train.glob("*/*_00[0-3].png")):
        pixels = ndimage.gaussian_filter(np.asarray(Image.open(source), float), 1.5)
        write_png(test / source.parent.name / source.name, pixels.astype(np.uint8))
    base = ["--quiet", "inspect", str(train), "--against", str(test), "-o"]
    found = {}
    for name, similarity in (("default", []), ("hash", ["--min-similarity", "-1"])):
        assert main([*base, str(tmp_path / f"{name}.json"), *similarity]) == 0
        found[name] = len(json.loads((tmp_path / f"{name}.json").read_text())["leakage"][0])
    # the hash alone (-1) calls the look-alikes copies; the pixel check does not
    assert found["hash"] >= 4 and found["default"] == 0
