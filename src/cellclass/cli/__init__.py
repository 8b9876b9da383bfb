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
import sys

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

__all__ = ["EXPORT_FORMATS", "build_parser", "main"]

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
        dest="command", required=True, metavar="COMMAND", parser_class=_subparser_class(common)
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
    args = build_parser().parse_args(argv)
    try:
        return COMMANDS[args.command](args)
    except KeyboardInterrupt:
        print("\ninterrupted: finished runs are kept; continue with --resume", file=sys.stderr)
        return 130
    except USER_ERRORS as error:
        print(f"cellclass: error: {error_line(error)}", file=sys.stderr)
        return 2


def error_line(error: BaseException) -> str:
    """The first non-blank line of ``error``'s message, or its type name: never empty."""
    lines = [line.strip() for line in str(error).splitlines() if line.strip()]
    return lines[0] if lines else type(error).__name__
