"""Imported once by the process that forks the dataset processes: every module a dataset process
needs, numba's compiled loops for every index type and tie-break, and the development-stage
ontology, so each forked dataset process starts warm."""

import importlib

import scrna_assets.worker  # noqa: F401  (the stack: dagster, the assets, the core)
from scrna_assets.core.ages import ontology_parser
from scrna_assets.core.sentences import load_all_compiled

IMPORTED_DURING_A_RUN = (
    "dagster._core.execution.execute_in_process",  # Dagster imports these when a run starts
    "dagster._core.execution.plan.active",
    "dagster._core.executor.in_process",
    "dagster._core.instance.runs.run_domain",
    "dagster._core.system_config.composite_descent",
    "pyarrow.dataset",  # pyarrow.parquet.read_table's reader: four shared libraries to load and relocate
    "pyarrow.pandas_compat",
    "polars._utils.parquet",
)
"""Modules the libraries import lazily inside a run: imported here, not again in every dataset
process. Internal names may move in another release; one that is gone costs only that time."""

for module in IMPORTED_DURING_A_RUN:
    try:
        importlib.import_module(module)
    except ImportError:
        pass
load_all_compiled()
ontology_parser()  # the development-stage terms, read once (~65 ms)
