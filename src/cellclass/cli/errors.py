"""Library errors name parameters (``val_split=0.5``, ``pick one with model=``); the command
line prints them with its own flags (``--val-split 0.5``, ``pick one with --model``).

`flag_names` rewrites ``name=`` wherever ``name`` is the destination of one of the command's
options, so the mapping follows the parser and needs no list of its own: ``name=True``
becomes the bare flag, ``with name=False`` becomes ``without --flag``, and a tuple
``name=(0, 2)`` the comma-separated list that such a flag takes (``--channels 0,2``).

The same holds for what the library says without raising (observer messages, Python warnings,
the text of `cellclass.prepare.steps.format_result`): `main` names the running command with
`speak_as`, and the commands print library text through `for_terminal`.
"""

from __future__ import annotations

import argparse
import re

__all__ = ["flag_names", "for_terminal", "option_flags", "speak_as"]

PARAMETER = re.compile(
    r"(?<![\w./'\"-])(?P<negated>with )?(?P<name>[a-z][a-z0-9_]*)="
    r"(?:(?P<flag>True|False)|\((?P<items>[^()]*)\))?"
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
        if match["items"] is not None:
            items = [item.strip() for item in match["items"].split(",") if item.strip()]
            return f"{prefix}{flag} {','.join(items)}"
        if match["flag"] == "True":
            return f"{prefix}{flag}"
        at_end = match.end() == len(message) or message[match.end()] in _VALUE_ENDS
        return f"{prefix}{flag}" if at_end else f"{prefix}{flag} "

    return PARAMETER.sub(swap, message)


_speaking: list[argparse.ArgumentParser] = []  # the running command's parser, set by main


def speak_as(parser: argparse.ArgumentParser | None) -> None:
    """Name the running command (None: none), whose flags `for_terminal` writes."""
    _speaking[:] = [parser] if parser is not None else []


def for_terminal(text: str) -> str:
    """Library ``text`` with the running command's flags for its parameters."""
    return flag_names(text, _speaking[0]) if _speaking else text
