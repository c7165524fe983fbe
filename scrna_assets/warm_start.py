"""Imported once by the batch's forkserver: every module a dataset process needs, and numba's
compiled loops for every index type and tie-break, so each forked dataset process starts warm."""

import scrna_assets.worker  # noqa: F401  (the stack: dagster, the assets, the core)
from scrna_assets.core.sentences import load_all_compiled

load_all_compiled()
