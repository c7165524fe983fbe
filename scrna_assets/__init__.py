"""scrna_assets: h5ad files to cell-sentence datasets, as Dagster assets.

The package itself imports nothing heavy: `scrna_assets.core` (no Dagster) and the `preprocess` CLI
start without loading Dagster. The code location lives in `scrna_assets.definitions` (what
`[tool.dagster]` in pyproject.toml and workspace.yaml name); `defs` here is loaded on first access
(PEP 562), so `dagster ... -m scrna_assets`, `from scrna_assets import defs` and run origins that
point at `scrna_assets:defs` keep working, with the code location still named `scrna_assets`.
Dagster finds `defs` because its module loader lists members with `inspect.getmembers`, which
uses `dir()`, hence the `__dir__` below.
"""

from __future__ import annotations

from typing import TYPE_CHECKING, Any

if TYPE_CHECKING:
    from scrna_assets.definitions import defs

__all__ = ["defs"]


def __getattr__(name: str) -> Any:
    if name == "defs":
        from scrna_assets.definitions import defs

        globals()["defs"] = defs  # later look-ups skip this function
        return defs
    raise AttributeError(f"module {__name__!r} has no attribute {name!r}")


def __dir__() -> list[str]:
    return sorted({*globals(), *__all__})
