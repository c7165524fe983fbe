"""The warm start leaves nothing to load in a dataset process: every module a dataset's run imports
is already imported by the process that forks it."""

from __future__ import annotations

import importlib
import json
import subprocess
import sys
from pathlib import Path

from scrna_assets.warm_start import IMPORTED_DURING_A_RUN

# In a fresh interpreter: the warm start, then step 1 and a whole dataset run (what a forked dataset
# process does), printing the modules the run imported that the warm start had not.
SCRIPT = """
import json, os, sys
from pathlib import Path
import scrna_assets.warm_start
from scrna_assets.settings import Settings
from scrna_assets.resources import PipelineSettings
from scrna_assets.runner import cli_instance, steps_job
from scrna_assets.steps import DATASET_STEPS
from scrna_assets.worker import DatasetTask, hgnc_step, process_dataset

h5ad, hgnc, root = sys.argv[1:4]
settings = PipelineSettings.of(Settings.load({"input_dir": root + "/in", "interim_dir": root + "/interim",
    "output_dir": root + "/out", "log_dir": root + "/logs", "hgnc_file": hgnc, "offline": True}, {}))
# what the batch parent does before forking: the instance, the tasks, their jobs
instance = cli_instance()
tasks = [DatasetTask.of(settings, "", None, (1,)), DatasetTask.of(settings, "example", Path(h5ad), DATASET_STEPS)]
for task in tasks:
    steps_job(task.settings, task.steps)
before = set(sys.modules)
step1, _ = hgnc_step(tasks[0], lambda *m: None, instance)
outcome = process_dataset(tasks[1], lambda *m: None, instance)
print(json.dumps({"status": [step1.success, outcome.status], "new": sorted(set(sys.modules) - before)}))
"""


def test_every_named_module_exists() -> None:
    """A Dagster or pyarrow release that moves one of them fails here rather than silently costing
    every dataset process the import."""
    for module in IMPORTED_DURING_A_RUN:
        importlib.import_module(module)


def test_a_dataset_run_imports_nothing_the_warm_start_did_not(tmp_path: Path, example_files) -> None:
    h5ad, hgnc = example_files
    result = subprocess.run(
        [sys.executable, "-c", SCRIPT, str(h5ad), str(hgnc), str(tmp_path)],
        cwd=tmp_path, env={"PATH": "/usr/bin:/bin", "HOME": str(tmp_path), "DAGSTER_HOME": ""},
        capture_output=True, text=True, timeout=300,
    )
    assert result.returncode == 0, result.stderr
    report = json.loads(result.stdout.strip().splitlines()[-1])
    assert report == {"status": [True, "SUCCESS"], "new": []}, " ".join(report["new"])
