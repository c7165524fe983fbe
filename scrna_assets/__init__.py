"""scrna_assets: h5ad files to cell-sentence datasets, as Dagster assets."""

from scrna_assets.definitions import defs

__all__ = ["defs"]
