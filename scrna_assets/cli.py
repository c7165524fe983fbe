"""`preprocess`: run the Dagster assets from the shell, one dataset at a time."""

from __future__ import annotations

import os
import time
import traceback
from pathlib import Path
from typing import Annotated, Optional

import typer

from scrna_assets.core.errors import InputError
from scrna_assets.core.example import EXAMPLE_NAME, write_example
from scrna_assets.inputs import datasets_by_name, h5ad_files
from scrna_assets.partitions import dataset_name
from scrna_assets.resources import PipelineSettings
from scrna_assets.runner import STEPS, PipelineRunner, StepResult, cli_instance

app = typer.Typer(help="Turn CellxGene h5ad files into cell-sentence datasets (Dagster assets).", no_args_is_help=True)
RULE = "=" * 60


def _banner(step: int) -> None:
    typer.echo(f"\n{RULE}\nSTEP {step}: {STEPS[step][1]}\n{RULE}")


STEP_FIGURES = {
    1: ("rows", "source"),
    2: ("cells", "chunks", "genes_mapped_hgnc", "genes_fallback", "genes_dropped", "empty_sentences"),
    3: ("cells_with_age", "cells_without_age", "distinct_ages"),
    4: ("split_by", "train_cells", "test_cells", "test_share", "train_donors", "test_donors"),
    5: ("status", "reason", "repo_id"),
}


def _report(step: int, result: StepResult) -> None:
    if result.success:
        shown = ", ".join(f"{k}={result.figures[k]}" for k in STEP_FIGURES[step] if k in result.figures)
        typer.echo(f"  {shown}\n✓ Step {step} complete")
    else:
        typer.echo(f"✗ Step {step} failed: {result.message}", err=True)


def _echo_step(step: int, result: StepResult | None) -> None:
    _banner(step) if result is None else _report(step, result)


@app.command("run-all")
def run_all(
    file: Annotated[Optional[Path], typer.Argument(help="The h5ad file to process.")] = None,
    example: Annotated[bool, typer.Option("--example", help="Write a small example h5ad into --input-dir and process it offline.")] = False,
    input_dir: Annotated[Path, typer.Option(help="Folder of input h5ad files.")] = Path("./data/input"),
    interim_dir: Annotated[Path, typer.Option(help="Folder for interim chunks.")] = Path("./data/interim"),
    output_dir: Annotated[Path, typer.Option(help="Folder for the final train/test chunks.")] = Path("./data/output"),
    log_dir: Annotated[Path, typer.Option(help="Folder for per-dataset logs.")] = Path("./logs"),
    chunk_size: Annotated[int, typer.Option(help="Cells per chunk (bounds memory).")] = 10_000,
    top_genes: Annotated[int, typer.Option(help="Genes per cell sentence; 0 = all expressed genes.")] = 2000,
    compression: Annotated[str, typer.Option(help="Parquet codec: zstd, snappy, gzip, brotli, lz4, none.")] = "zstd",
    test_size: Annotated[float, typer.Option(help="Share of aged cells for the test split, in (0, 1).")] = 0.05,
    seed: Annotated[int, typer.Option(help="Seed of the train/test split.")] = 42,
    split_by: Annotated[str, typer.Option(help="auto, donor or cell.")] = "auto",
    matrix: Annotated[str, typer.Option(help="auto (raw.X, then layers['counts'], then X), raw.X, counts or X.")] = "auto",
    hgnc_file: Annotated[Optional[Path], typer.Option(envvar="SCRNA_HGNC_FILE", help="Local HGNC complete set (TSV or parquet).")] = None,
    offline: Annotated[bool, typer.Option(help="Never download the HGNC table.")] = False,
    skip_train_test_split: Annotated[bool, typer.Option(help="Write aged cells to <output>/<name>/chunks/ without splitting.")] = False,
    keep_interim: Annotated[bool, typer.Option(help="Keep interim chunks after a successful split.")] = False,
    repo_id: Annotated[Optional[str], typer.Option(help="HuggingFace dataset repository to upload to.")] = None,
    token: Annotated[Optional[str], typer.Option(envvar="HF_TOKEN", show_envvar=True, help="HuggingFace token.")] = None,
    private: Annotated[bool, typer.Option("--private/--public", help="Visibility of a created repository.")] = True,
    debug: Annotated[bool, typer.Option(help="Show Dagster's logs and full tracebacks.")] = False,
) -> None:
    """Process one h5ad file through every asset: HGNC mapping, chunks, ages, split, upload."""
    input_dir = input_dir.resolve()
    if example:
        h5ad, example_hgnc = write_example(input_dir)
        file, offline = h5ad, True
        hgnc_file = hgnc_file or example_hgnc
        typer.echo(f"Example dataset written to {h5ad}")
    if file is None:
        _fail_usage("give an h5ad FILE, or --example")
    settings = PipelineSettings(
        input_dir=str(input_dir),
        interim_dir=str(interim_dir.resolve()),
        output_dir=str(output_dir.resolve()),
        log_dir=str(log_dir.resolve()),
        chunk_size=chunk_size,
        top_genes=top_genes,
        compression=compression,
        test_size=test_size,
        seed=seed,
        split_by=split_by,
        matrix=matrix,
        hgnc_file=str(hgnc_file.resolve()) if hgnc_file else None,
        offline=offline,
        skip_train_test_split=skip_train_test_split,
        keep_interim=keep_interim,
        repo_id=repo_id,
        private=private,
    )
    problems = settings.problems()
    if repo_id and not token:
        problems.append("--repo-id needs a token: pass --token or set HF_TOKEN")
    if problems:
        _fail_usage("; ".join(problems))
    if token:
        os.environ["HF_TOKEN"] = token  # read by huggingface_hub itself; never put in settings or logs

    source = file if file.exists() or file.is_absolute() else input_dir / file
    try:
        if not source.is_file():
            raise InputError(source, "no such file")
        dataset = dataset_name(source)
    except (InputError, ValueError) as error:
        typer.echo(f"✗ {error}", err=True)
        raise typer.Exit(1)

    started = time.perf_counter()
    runner = PipelineRunner(settings, cli_instance(), debug=debug)
    try:
        _banner(1)
        hgnc = runner.run_step(1)
        _report(1, hgnc)
        results = [hgnc] + (runner.run_dataset(dataset, source.resolve(), _echo_step) if hgnc.success else [])
    except Exception:
        if debug:
            traceback.print_exc()
        raise
    seconds = time.perf_counter() - started
    failed = next((r for r in results if not r.success), None)
    typer.echo(f"\n{RULE}")
    if failed:
        typer.echo(f"✗ {dataset}: failed at step {failed.step} ({failed.asset}): {failed.message}")
    else:
        cells = next((r.figures.get("cells") for r in results if r.asset == "parquet_chunks"), 0)
        typer.echo(f"✓ {dataset}: {cells} cells in {seconds:.1f} s ({cells / seconds:.0f} cells/s)")
    typer.echo(f"  Output: {Path(settings.output_dir) / dataset}\n  Logs:   {Path(settings.log_dir) / dataset}")
    raise typer.Exit(1 if failed else 0)


@app.command("register")
def register(
    paths: Annotated[Optional[list[Path]], typer.Argument(help="h5ad files or folders of them (default: --input-dir).")] = None,
    input_dir: Annotated[Path, typer.Option(help="Folder of input h5ad files.")] = Path("./data/input"),
) -> None:
    """Add datasets as dynamic partitions, so the UI and `dagster asset materialize --partition` see
    them (Dagster's own CLI has no command for adding a dynamic partition)."""
    files: list[Path] = []
    for path in paths or [input_dir]:
        path = path.resolve()
        files += h5ad_files(path) if path.is_dir() else [path]
    names, errors = datasets_by_name(files)
    for error in errors:
        typer.echo(f"✗ {error}", err=True)
    runner = PipelineRunner(PipelineSettings.from_env(), cli_instance())
    for name, path in names.items():
        runner.register(name)
        typer.echo(f"registered {name} <- {path}")
    raise typer.Exit(1 if errors else 0)


def _fail_usage(message: str) -> None:
    typer.echo(f"Error: {message}", err=True)
    raise typer.Exit(2)


if __name__ == "__main__":
    app()
