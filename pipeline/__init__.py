"""The stream processor: the stages, their state, and the domain code they run.

The pure domain modules may be compiled to C extensions by mypyc (``make compiled``): each
``.so`` sits beside its ``.py``, and Python imports the ``.so``. A ``.so`` built from an
older ``.py`` would run the old code silently, so importing this package refuses to.
"""

from __future__ import annotations

import sys
from pathlib import Path

_HERE = Path(__file__).parent


def _refuse_stale_extensions(directory: Path = _HERE) -> None:
    for extension in directory.glob("*.so"):
        source = directory / f"{extension.name.split('.', 1)[0]}.py"
        if source.exists() and source.stat().st_mtime > extension.stat().st_mtime:
            raise ImportError(
                f"{extension} was compiled from an older {source.name}: run `make compiled` "
                "to rebuild it, or `make pure` to run the plain Python"
            )


def compiled_modules() -> list[str]:
    """The names of this package's modules imported as compiled extensions."""
    return sorted(
        name
        for name, module in list(sys.modules.items())
        if name.startswith(f"{__name__}.") and str(getattr(module, "__file__", "")).endswith(".so")
    )


_refuse_stale_extensions()
