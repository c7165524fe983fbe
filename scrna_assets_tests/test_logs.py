"""Per-dataset logs: whole lines or nothing, even when the disk fills up."""

from __future__ import annotations

import json
import textwrap
from pathlib import Path

import pytest

from scrna_assets.logs import DatasetLog
from scrna_assets_tests.disk_full import SKIP_REASON, disk_full_supported, run_python_on_small_tmpfs


def test_event_writes_one_line_to_each_file(tmp_path: Path) -> None:
    log = DatasetLog(tmp_path / "ds", "ds")
    log.event("convert", "start")
    log.event("convert", "end", message="done", cells=3)
    records = [json.loads(line) for line in (tmp_path / "ds/pipeline.json").read_text().splitlines()]
    assert [{k: v for k, v in r.items() if k != "time"} for r in records] == [
        {"level": "INFO", "dataset": "ds", "step": "convert", "event": "start", "message": "", "figures": {}},
        {"level": "INFO", "dataset": "ds", "step": "convert", "event": "end", "message": "done",
         "figures": {"cells": 3}},
    ]
    lines = (tmp_path / "ds/pipeline.log").read_text().splitlines()
    assert [line.split(" ", 1)[1] for line in lines] == [
        "INFO    [ds] convert: start",
        "INFO    [ds] convert: end - done (cells=3)",
    ]


CHILD = textwrap.dedent(
    """
    import json, sys
    from pathlib import Path
    from scrna_assets.logs import DatasetLog

    folder = Path(sys.argv[1]) / "ds"
    log = DatasetLog(folder, "ds")
    log.event("convert", "start")
    before = {name: (folder / name).read_bytes().decode() for name in ("pipeline.json", "pipeline.log")}
    try:
        log.event("convert", "failed", level="ERROR", message="x" * 200_000)
        report = {"raised": None}
    except OSError as error:
        report = {"raised": str(error)}
    after = {name: (folder / name).read_bytes().decode() for name in ("pipeline.json", "pipeline.log")}
    report["unchanged"] = before == after
    report["files"] = sorted(p.name for p in folder.iterdir())
    print(json.dumps(report))
    """
)


@pytest.mark.skipif(not disk_full_supported(), reason=SKIP_REASON)
def test_full_disk_leaves_both_logs_byte_identical(tmp_path: Path) -> None:
    """A 200 kB event on a 64 KiB disk: one message naming the folder, no torn line in either file."""
    logs = tmp_path / "logs"
    logs.mkdir()
    report = run_python_on_small_tmpfs(logs, 64, CHILD)
    assert report == {
        "raised": f"no space left in {logs / 'ds'} (the disk or quota is full)",
        "unchanged": True,
        "files": ["pipeline.json", "pipeline.log"],
    }
