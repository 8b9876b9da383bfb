"""Library errors speak of parameters; only the command line names ``--flags`` (issue 16).

The library writes ``name=value`` (``test_every=0``) or ``name=`` (``pick one with model=``);
`cellclass.cli.errors.flag_names` turns each into the flag of the command's option with that
destination, so the same error reads right in a notebook and in a terminal.
"""

from __future__ import annotations

import ast
import re
from pathlib import Path

import numpy as np
import pytest

import cellclass
from cellclass.cli import build_parser, main
from cellclass.cli.errors import flag_names
from cellclass.prepare import PrepareError, RotateSettings, rotate_folder

PACKAGE = Path(cellclass.__file__).parent
FLAG = re.compile(r"(?<![\w-])--[a-z][a-z0-9-]*")

ALLOWED = {  # library files whose raised messages may still name a flag, and why
    "data/images.py": "parse_channels parses the command line's --channels text itself",
    "training/recipes.py": "parse_overrides and resolve_recipes parse --set and --recipe text",
}


def _flags_in_raised_messages() -> dict[str, list[str]]:
    """Library file -> the ``--flag`` literals inside its ``raise`` statements."""
    found: dict[str, list[str]] = {}
    for path in sorted(PACKAGE.rglob("*.py")):
        relative = path.relative_to(PACKAGE).as_posix()
        if relative.startswith("cli/"):
            continue
        for node in ast.walk(ast.parse(path.read_text(encoding="utf-8"))):
            if not isinstance(node, ast.Raise) or node.exc is None:
                continue
            for text in ast.walk(node.exc):
                if isinstance(text, ast.Constant) and isinstance(text.value, str):
                    found.setdefault(relative, []).extend(FLAG.findall(text.value))
    return {file: flags for file, flags in found.items() if flags}


SAYS_COMMANDS = {  # library files whose other text may name a flag, and why
    **ALLOWED,
    "report/build.py": "the report tells its reader the commands that add the expert's scores",
    "demo.py": "the demo's note quotes the study's own command",
}


def _docstrings(tree: ast.AST) -> set[int]:
    """ids of the docstring constants of ``tree``'s module, classes and functions."""
    owners = (ast.Module, ast.ClassDef, ast.FunctionDef, ast.AsyncFunctionDef)
    return {
        id(node.body[0].value)
        for node in ast.walk(tree)
        if isinstance(node, owners)
        and node.body
        and isinstance(node.body[0], ast.Expr)
        and isinstance(node.body[0].value, ast.Constant)
    }


def _flags_in_library_text() -> dict[str, list[str]]:
    """Library file -> the ``--flag`` literals in its strings, docstrings left out: what it
    prints, warns, returns as text or raises."""
    found: dict[str, list[str]] = {}
    for path in sorted(PACKAGE.rglob("*.py")):
        relative = path.relative_to(PACKAGE).as_posix()
        if relative.startswith("cli/"):
            continue
        tree = ast.parse(path.read_text(encoding="utf-8"))
        skip = _docstrings(tree)
        for node in ast.walk(tree):
            text = isinstance(node, ast.Constant) and isinstance(node.value, str)
            if text and id(node) not in skip:
                found.setdefault(relative, []).extend(FLAG.findall(node.value))
    return {file: flags for file, flags in found.items() if flags}


def test_library_text_names_parameters_not_flags():
    """Warnings, observer messages and returned reports too (issue 16): the command line
    rewrites them with its flags (`cellclass.cli.errors.for_terminal`), a notebook reads the
    parameters it passes."""
    found = _flags_in_library_text()
    bad = {file: flags for file, flags in found.items() if file not in SAYS_COMMANDS}
    assert not bad, f"library text naming CLI flags (write name= instead): {bad}"
    assert set(SAYS_COMMANDS) <= set(found)  # the allow-list only shrinks


def test_library_errors_name_parameters_not_flags():
    found = _flags_in_raised_messages()
    bad = {file: flags for file, flags in found.items() if file not in ALLOWED}
    assert not bad, f"raised messages naming CLI flags (write name= instead): {bad}"


def test_every_allowed_file_still_needs_it():
    """The allow-list only shrinks: a file that no longer names flags leaves it."""
    assert set(ALLOWED) <= set(_flags_in_raised_messages())


def _command(name: str):
    parser = build_parser()
    return next(a for a in parser._actions if hasattr(a, "choices") and a.choices).choices[name]


@pytest.mark.parametrize(
    ("command", "message", "expected"),
    [
        ("train", "test_every=0: give a whole number", "--test-every 0: give a whole number"),
        (
            "compare",
            "db=/x.sqlite holds several scorers (a, b); pick one with scorer=",
            "--human /x.sqlite holds several scorers (a, b); pick one with --scorer",
        ),  # fmt: skip
        ("blind", "db=/x.db: folder /no does not exist", "--db /x.db: folder /no does not exist"),
        (
            "train",
            "x exists; choose a new out=, or pass resume=True",
            "x exists; choose a new --out, or pass --resume",
        ),  # fmt: skip
        ("train", "leakage; or run with strict=False", "leakage; or run without --strict"),
        ("export", "fmt='keras': choose one of", "--format 'keras': choose one of"),
        (
            "export",
            "run 0 has models a, b; pick one with model=",
            "run 0 has models a, b; pick one with --model",
        ),  # fmt: skip
        (
            "prepare",
            "give exactly one of grid=N or tile_size=PIXELS",
            "give exactly one of --grid N or --tile-size PIXELS",
        ),  # fmt: skip
        ("train", "/data/out=b/f.tif", "/data/out=b/f.tif"),  # inside a path
        ("train", "unknown_name=3 stays", "unknown_name=3 stays"),
    ],
)
def test_flag_names_follow_the_parser(command, message, expected):
    assert flag_names(message, _command(command)) == expected


def _flips_that_repeat(tmp_path):
    (tmp_path / "src" / "a").mkdir(parents=True)
    return RotateSettings(angles=(0.0, 180.0), flips=("h", "v"))


def test_the_library_names_the_parameter(tmp_path):
    settings = _flips_that_repeat(tmp_path)
    with pytest.raises(PrepareError, match=r"use flips=h alone") as info:
        rotate_folder(tmp_path / "src", tmp_path / "dst", settings)
    assert "--" not in str(info.value)


def test_the_command_line_names_the_flag(tmp_path, capsys):
    _flips_that_repeat(tmp_path)
    argv = ["prepare", "rotate", str(tmp_path / "src"), str(tmp_path / "dst")]
    assert main([*argv, "--angles", "0,180", "--flip", "h", "--flip", "v"]) == 2
    err = capsys.readouterr().err
    assert "use --flip h alone" in err and "flips=" not in err


@pytest.mark.parametrize(
    ("message", "expected"),
    [
        ("channels=(0, 2): bad", "--channels 0,2: bad"),
        ("pick one with channels=(K,), or save", "pick one with --channels K, or save"),
        ("the threshold (min_foreground=) selects", "the threshold (--min-foreground) selects"),
    ],
)
def test_tuples_and_bare_names_become_the_flags_text(message, expected):
    command = "train" if "channels" in message else "prepare"
    assert flag_names(message, _command(command)) == expected


def test_library_warnings_print_as_one_line_with_flags(tmp_path, capsys):
    """A Python warning from the library (a TIFF read with guessed axes) reaches the terminal
    as ``warning: ...`` naming ``--channels``, without the library's file and source line;
    the same warning in Python names the parameter (test_formats)."""
    import tifffile

    rng = np.random.default_rng(0)
    for name in ("a", "b"):
        for i in range(2):
            path = tmp_path / "src" / name / f"{i}.tif"
            path.parent.mkdir(parents=True, exist_ok=True)
            data = rng.integers(0, 255, (3, 64, 64), dtype=np.uint8)
            tifffile.imwrite(path, data, photometric="minisblack")
    argv = ["preview", str(tmp_path / "src"), "-o", str(tmp_path / "grid.png")]
    assert main([*argv, "--image-size", "32", "--cache-dir", str(tmp_path / "cache")]) == 0
    lines = [line for line in capsys.readouterr().err.splitlines() if "axis metadata" in line]
    assert len(lines) == 2  # once per class folder
    assert all(line.startswith("warning: ") for line in lines)
    assert all("pick one with --channels K, or save" in line for line in lines)
    assert not any("UserWarning" in line or "images.py" in line for line in lines)
