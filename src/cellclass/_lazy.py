"""Package namespaces whose names are imported from their submodule on first use.

``cellclass predict`` needs the CNN and a few helpers; importing every submodule of
`cellclass.models` and `cellclass.training` eagerly pulled in scikit-learn, scikit-image and
SciPy, 0.8 s of every start of the command (``python -X importtime``).
"""

from __future__ import annotations

import importlib
import sys
from collections.abc import Callable


def lazy_exports(
    package: str, names_by_module: dict[str, tuple[str, ...]]
) -> tuple[list[str], Callable[[str], object], Callable[[], list[str]]]:
    """``(__all__, __getattr__, __dir__)`` for ``package``'s ``__init__``.

    ``names_by_module`` maps a submodule (relative to ``package``) to the names it exports.
    The first access to a name imports its submodule and keeps the name in the package.
    """
    module_of = {name: module for module, names in names_by_module.items() for name in names}

    def __getattr__(name: str) -> object:
        if name not in module_of:
            raise AttributeError(f"module {package!r} has no attribute {name!r}")
        value = getattr(importlib.import_module(f"{package}.{module_of[name]}"), name)
        setattr(sys.modules[package], name, value)
        return value

    def __dir__() -> list[str]:
        return sorted(set(vars(sys.modules[package])) | set(module_of))

    return sorted(module_of), __getattr__, __dir__
