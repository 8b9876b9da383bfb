"""Library errors name parameters (``val_split=0.5``, ``pick one with model=``); the command
line prints them with its own flags (``--val-split 0.5``, ``pick one with --model``).

`flag_names` rewrites ``name=`` wherever ``name`` is the destination of one of the command's
options, so the mapping follows the parser and needs no list of its own: ``name=True``
becomes the bare flag, ``with name=False`` becomes ``without --flag``.
"""

from __future__ import annotations

import argparse
import re

__all__ = ["flag_names", "option_flags"]

PARAMETER = re.compile(
    r"(?<![\w./'\"-])(?P<negated>with )?(?P<name>[a-z][a-z0-9_]*)=(?P<flag>True|False)?"
)
_VALUE_ENDS = " ;,)"  # after ``name=`` one of these means no value follows


def option_flags(parser: argparse.ArgumentParser) -> dict[str, str]:
    """Destination -> long option (``val_split`` -> ``--val-split``) of ``parser`` and of its
    sub-commands (``prepare tile``)."""
    flags: dict[str, str] = {}
    for action in parser._actions:
        if isinstance(action, argparse._SubParsersAction):
            for sub in action.choices.values():
                flags = {**option_flags(sub), **flags}
            continue
        longs = [option for option in action.option_strings if option.startswith("--")]
        if longs and action.dest not in ("help", "version"):
            flags.setdefault(action.dest, longs[0])
    return flags


def flag_names(message: str, parser: argparse.ArgumentParser) -> str:
    """``message`` with each ``name=`` of ``parser``'s options written as its flag."""
    flags = option_flags(parser)

    def swap(match: re.Match) -> str:
        flag = flags.get(match["name"])
        if flag is None or (match["flag"] == "False" and not match["negated"]):
            return match[0]
        if match["flag"] == "False":
            return f"without {flag}"
        prefix = match["negated"] or ""
        if match["flag"] == "True":
            return f"{prefix}{flag}"
        at_end = match.end() == len(message) or message[match.end()] in _VALUE_ENDS
        return f"{prefix}{flag}" if at_end else f"{prefix}{flag} "

    return PARAMETER.sub(swap, message)
