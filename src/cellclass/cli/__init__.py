"""The ``cellclass`` command: argument parsing, progress display and exit codes.

Every command turns its arguments into library settings and calls one library function;
nothing here decides anything a notebook user could not do with the same calls.
Exit codes: 0 success, 2 bad input (one-line message, no traceback), 130 interrupted.

This module owns the top-level parser (`build_parser`), the table of commands and `main`
with its exit codes. The commands live by group:

- ``cellclass.cli.run_commands``: demo, train, evaluate, predict, report
- ``cellclass.cli.data_commands``: prepare, inspect, preview, models
- ``cellclass.cli.study_commands``: blind, compare, export, explain
- ``cellclass.cli.arguments``: argument types and the shared "loading images" options
- ``cellclass.cli.display``: progress bars and the printed summary table
"""

from __future__ import annotations

import argparse
import difflib
import re
import sys
import warnings

from cellclass import __version__
from cellclass.cli.data_commands import (
    add_inspect_parser,
    add_models_parser,
    add_prepare_parser,
    add_preview_parser,
    cmd_inspect,
    cmd_models,
    cmd_prepare,
    cmd_preview,
)
from cellclass.cli.errors import flag_names, for_terminal, speak_as
from cellclass.cli.run_commands import (
    add_demo_parser,
    add_evaluate_parser,
    add_predict_parser,
    add_report_parser,
    add_train_parser,
    cmd_demo,
    cmd_evaluate,
    cmd_predict,
    cmd_report,
    cmd_train,
)
from cellclass.cli.study_commands import (
    EXPORT_FORMATS,
    add_blind_parser,
    add_compare_parser,
    add_explain_parser,
    add_export_parser,
    cmd_blind,
    cmd_compare,
    cmd_explain,
    cmd_export,
)

__all__ = ["EXPORT_FORMATS", "build_parser", "main", "parse_arguments"]

USER_ERRORS: tuple[type[Exception], ...] = (ValueError, FileExistsError, FileNotFoundError)


def _subparser_class(common: argparse.ArgumentParser):
    """A parser class whose instances inherit ``common``'s options (every subcommand)."""

    class Subparser(argparse.ArgumentParser):
        def __init__(self, *args, **kwargs):
            kwargs.setdefault("parents", [common])
            kwargs.setdefault("allow_abbrev", False)  # --epoch is a mistake, not --epochs
            super().__init__(*args, **kwargs)

    return Subparser


def build_parser() -> argparse.ArgumentParser:
    parser = argparse.ArgumentParser(
        prog="cellclass",
        allow_abbrev=False,
        description="Can a neural network classify my microscopy images as well as I can, "
        "reproducibly?",
    )
    parser.add_argument("--version", action="version", version=f"cellclass {__version__}")
    parser.add_argument("--quiet", action="store_true", help="no progress bars")
    common = argparse.ArgumentParser(add_help=False, allow_abbrev=False)  # --quiet after it too
    common.add_argument(
        "--quiet", action="store_true", default=argparse.SUPPRESS, help="no progress bars"
    )
    commands = parser.add_subparsers(
        dest="command",
        required=True,
        metavar="COMMAND",
        help="what to do; `cellclass COMMAND --help` lists its options",
        parser_class=_subparser_class(common),
    )

    add_demo_parser(commands)
    add_train_parser(commands)
    add_evaluate_parser(commands)
    add_predict_parser(commands)
    add_report_parser(commands)
    add_preview_parser(commands)
    add_models_parser(commands)
    add_blind_parser(commands)
    add_compare_parser(commands)
    add_prepare_parser(commands)
    add_inspect_parser(commands)
    add_export_parser(commands)
    add_explain_parser(commands)
    return parser


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
    parser = build_parser()
    args = parse_arguments(parser, sys.argv[1:] if argv is None else argv)
    command = _subcommands(parser).choices[args.command]
    speak_as(command)  # library text printed with this command's flags
    try:
        with warnings.catch_warnings():
            warnings.showwarning = _show_warning
            return COMMANDS[args.command](args)
    except KeyboardInterrupt:
        print("\ninterrupted: finished runs are kept; continue with --resume", file=sys.stderr)
        return 130
    except USER_ERRORS as error:
        print(f"cellclass: error: {flag_names(error_line(error), command)}", file=sys.stderr)
        return 2
    finally:
        speak_as(None)


def _show_warning(message, category, filename, lineno, file=None, line=None) -> None:
    """A library warning as one line, ``warning: ...``, naming flags rather than parameters
    (no file name and source line: they are the library's, not the user's)."""
    print(f"warning: {for_terminal(str(message))}", file=file or sys.stderr)


def error_line(error: BaseException) -> str:
    """The first non-blank line of ``error``'s message, or its type name: never empty."""
    lines = [line.strip() for line in str(error).splitlines() if line.strip()]
    return lines[0] if lines else type(error).__name__


FLAG = re.compile(r"--?[A-Za-z][\w-]*")  # what argparse takes for an option (not -5, -5:5:1)


def parse_arguments(parser: argparse.ArgumentParser, argv: list[str]) -> argparse.Namespace:
    """``parser.parse_args(argv)``, but a flag its command does not have (``train --epoch 3``)
    stops with one line naming the closest one, exit status 2, before argparse can report
    something else first (a required option that the misspelling left out)."""
    problem = unknown_flag(parser, argv)
    if problem is not None:
        parser.exit(2, f"{problem}\n")
    return parser.parse_args(argv)


def unknown_flag(parser: argparse.ArgumentParser, argv: list[str]) -> str | None:
    """The error line for the first flag in ``argv`` that the command it belongs to does not
    have (commands and sub-commands followed as argparse would), or None."""
    current = parser
    for token in argv:
        if token == "--":  # the rest are values
            return None
        name = token.split("=", 1)[0]
        if FLAG.fullmatch(name):
            name = name if name.startswith("--") else name[:2]  # -ofile is -o file
            if name not in current._option_string_actions:
                return _unknown_flag_line(current, name)
            continue
        commands = _subcommands(current)
        if commands is not None and token in commands.choices:
            current = commands.choices[token]
    return None


def _subcommands(parser: argparse.ArgumentParser):
    return next((a for a in parser._actions if isinstance(a, argparse._SubParsersAction)), None)


RENAMED = {"--output": "-o/--out", "--json": "-o/--out", "--csv": "-o/--out"}  # old spellings


def _unknown_flag_line(parser: argparse.ArgumentParser, flag: str) -> str:
    flags = [name for name in parser._option_string_actions if name.startswith("--")]
    close = difflib.get_close_matches(flag if flag.startswith("--") else f"-{flag}", flags, n=1)
    positionals = {action.metavar for action in parser._actions if not action.option_strings}
    if flag in RENAMED and "--out" in flags:
        hint = f"it is now {RENAMED[flag]}"
    elif flag == "--run" and "RUN_DIR" in positionals:
        hint = "give the results folder as RUN_DIR (no flag; see the usage)"
    elif close:
        hint = f"did you mean {close[0]}?"
    else:
        hint = f"see {parser.prog} --help"
    return f"{parser.prog}: error: unrecognized argument {flag}; {hint}"
