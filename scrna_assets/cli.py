"""`preprocess`: run the Dagster assets from the shell, for one file or a whole folder.

Every command shares the pipeline options; each runs the same assets as the UI does.
"""

from __future__ import annotations

import functools
import inspect
import os
import sys
from collections.abc import Callable
from dataclasses import dataclass
from datetime import datetime, timezone
from pathlib import Path
from typing import Annotated, Any, Optional

import typer

from scrna_assets.batch import run_batch, run_hgnc
from scrna_assets.core.errors import InputError
from scrna_assets.core.example import write_example
from scrna_assets.inputs import datasets_by_name, h5ad_files
from scrna_assets.partitions import dataset_name
from scrna_assets.resources import PipelineSettings
from scrna_assets.run_liveness import fail_dead_runs
from scrna_assets.runner import STEPS, PipelineRunner, StepResult, cli_instance
from scrna_assets.summary import FAILED, RULE, DatasetOutcome, render_summary, write_summary

app = typer.Typer(
    help="Turn CellxGene h5ad files into cell-sentence datasets (Dagster assets).",
    no_args_is_help=True,
    pretty_exceptions_enable=False,
)

FORK_HERE = __name__ == "__main__" or Path(sys.argv[0]).name == "preprocess"
"""The ``preprocess`` process does no data work itself, so it may fork its dataset processes
directly (see ``batch``); imported elsewhere (tests, notebooks), the CLI uses a forkserver."""

STEP_FIGURES = {
    1: ("rows", "source"),
    2: ("cells", "chunks", "genes_mapped_hgnc", "genes_fallback", "genes_dropped", "empty_sentences"),
    3: ("cells_with_age", "cells_without_age", "cells_with_bounds_only", "distinct_ages"),
    4: ("split_by", "train_cells", "test_cells", "test_share", "train_donors", "test_donors", "donors_in_both"),
    5: ("status", "reason", "repo_id"),
}


@dataclass
class Options:
    """The options every command takes (the seed's, plus --seed, --split-by, --matrix, --hgnc-file)."""

    input_dir: Path
    interim_dir: Path
    output_dir: Path
    log_dir: Path
    chunk_size: int
    top_genes: int
    compression: str
    test_size: float
    seed: int
    split_by: str
    tie_break: str
    include_age_ranges: bool
    primary_only: bool
    license: str
    matrix: str
    hgnc_file: Optional[Path]
    offline: bool
    skip_train_test_split: bool
    keep_interim: bool
    skip_existing: bool
    batch_mode: bool
    repo_id: Optional[str]
    token: Optional[str]
    private: bool
    debug: bool

    def settings(self, repo_per_dataset: bool) -> PipelineSettings:
        return PipelineSettings(
            input_dir=str(self.input_dir.resolve()),
            interim_dir=str(self.interim_dir.resolve()),
            output_dir=str(self.output_dir.resolve()),
            log_dir=str(self.log_dir.resolve()),
            chunk_size=self.chunk_size,
            top_genes=self.top_genes,
            compression=self.compression,
            test_size=self.test_size,
            seed=self.seed,
            split_by=self.split_by,
            tie_break=self.tie_break,
            include_age_ranges=self.include_age_ranges,
            primary_only=self.primary_only,
            license=self.license,
            matrix=self.matrix,
            hgnc_file=str(self.hgnc_file.resolve()) if self.hgnc_file else None,
            offline=self.offline,
            skip_train_test_split=self.skip_train_test_split,
            keep_interim=self.keep_interim,
            repo_id=self.repo_id,
            repo_per_dataset=repo_per_dataset,
            private=self.private,
        )


_OPTION_PARAMETERS = [
    ("input_dir", Annotated[Path, typer.Option(help="Folder of input h5ad files.")], Path("./data/input")),
    ("interim_dir", Annotated[Path, typer.Option(help="Folder for interim chunks.")], Path("./data/interim")),
    ("output_dir", Annotated[Path, typer.Option(help="Folder for the final chunks.")], Path("./data/output")),
    ("log_dir", Annotated[Path, typer.Option(help="Folder for logs and batch summaries.")], Path("./logs")),
    ("chunk_size", Annotated[int, typer.Option(help="Cells per chunk (bounds memory).")], 10_000),
    ("top_genes", Annotated[int, typer.Option(help="Genes per cell sentence; 0 = all expressed genes.")], 2000),
    ("compression", Annotated[str, typer.Option(help="Parquet codec: zstd, snappy, gzip, brotli, lz4, none.")], "zstd"),
    ("test_size", Annotated[float, typer.Option(help="Share of aged cells for the test split, in (0, 1).")], 0.05),
    ("seed", Annotated[int, typer.Option(help="Seed of the train/test split and of the random tie-break.")], 42),
    ("split_by", Annotated[str, typer.Option(help="auto (donor when there is a donor_id column, else cell), donor or cell.")], "auto"),
    ("tie_break", Annotated[str, typer.Option(help="Order of genes with equal values: random (seeded, per cell) or position (var order).")], "random"),
    ("include_age_ranges", Annotated[bool, typer.Option(help="Also keep cells whose stage gives age bounds only (ranges, 'and over').")], False),
    ("primary_only", Annotated[bool, typer.Option(help="Drop cells with is_primary_data = False before the split.")], False),
    ("license", Annotated[str, typer.Option(help="Dataset card license when the source does not fix it (CELLxGENE files: cc-by-4.0).")], "other"),
    ("matrix", Annotated[str, typer.Option(help="auto (raw.X, then layers['counts'], then X), raw.X, counts or X.")], "auto"),
    ("hgnc_file", Annotated[Optional[Path], typer.Option(envvar="SCRNA_HGNC_FILE", help="Local HGNC complete set (TSV or parquet).")], None),
    ("offline", Annotated[bool, typer.Option(help="Never download the HGNC table.")], False),
    ("skip_train_test_split", Annotated[bool, typer.Option(help="Write aged cells to <output>/<name>/chunks/ without splitting.")], False),
    ("keep_interim", Annotated[bool, typer.Option(help="Keep interim chunks after a successful split.")], False),
    ("skip_existing", Annotated[bool, typer.Option(help="Skip datasets already processed from the same file with the same parameters.")], False),
    ("batch_mode", Annotated[bool, typer.Option(help="Process every *.h5ad in the folder (--input-dir or the argument).")], False),
    ("repo_id", Annotated[Optional[str], typer.Option(help="HuggingFace dataset repository (batch: <repo-id>-<name>).")], None),
    ("token", Annotated[Optional[str], typer.Option(envvar="HF_TOKEN", show_envvar=True, help="HuggingFace token.")], None),
    ("private", Annotated[bool, typer.Option("--private/--public", help="Visibility of created repositories.")], True),
    ("debug", Annotated[bool, typer.Option(help="Show Dagster's logs.")], False),
]


def with_options(command: Callable[..., None]) -> Callable[..., None]:
    """Give a command every pipeline option and pass them to it as one ``Options``."""
    own = [p for p in inspect.signature(command, eval_str=True).parameters.values() if p.name != "options"]
    shared = [
        inspect.Parameter(name, inspect.Parameter.KEYWORD_ONLY, annotation=annotation, default=default)
        for name, annotation, default in _OPTION_PARAMETERS
    ]

    @functools.wraps(command)
    def wrapper(**kwargs: Any) -> None:
        options = Options(**{name: kwargs.pop(name) for name, _, _ in _OPTION_PARAMETERS})
        command(options=options, **kwargs)

    parameters = own + shared
    wrapper.__signature__ = inspect.Signature(parameters)  # type: ignore[attr-defined]
    wrapper.__annotations__ = {p.name: p.annotation for p in parameters}
    del wrapper.__wrapped__  # typer must read the new signature, not the command's
    return wrapper


class EchoReporter:
    """Prints the seed's banners as the runner goes."""

    def file(self, index: int, total: int, dataset: str) -> None:
        typer.echo(f"\n{'#' * 60}\nPROCESSING FILE {index}/{total}: {dataset}\n{'#' * 60}")

    def step(self, step: int, result: StepResult | None) -> None:
        if result is None:
            typer.echo(f"\n{RULE}\nSTEP {step}: {STEPS[step][1]}\n{RULE}")
        elif result.success:
            shown = ", ".join(f"{k}={result.figures[k]}" for k in STEP_FIGURES[step] if k in result.figures)
            typer.echo(f"  {shown}")
            if result.figures.get("note"):
                typer.echo(f"  ! {result.figures['note']}")
            for name, severity in result.failed_checks.items():
                typer.echo(f"  ✗ check {name} failed ({severity})")
            typer.echo(f"✓ Step {step} complete")
        else:
            typer.echo(f"✗ Step {step} failed: {result.message}")

    def note(self, line: str) -> None:
        typer.echo(line)


class StepReporter(EchoReporter):
    """A step command's output: its step's banner and figures for each dataset, no file banners."""

    def file(self, index: int, total: int, dataset: str) -> None:
        pass


def _fail_usage(message: str) -> None:
    typer.echo(f"Error: {message}", err=True)
    raise typer.Exit(2)


def _prepare(options: Options, target: Optional[Path], repo_per_dataset: bool) -> PipelineSettings:
    """Validate every option up front; then the settings every dataset process gets."""
    if options.batch_mode and target is not None:
        options.input_dir = target
    settings = options.settings(repo_per_dataset)
    problems = settings.problems()
    if options.repo_id and not options.token:
        problems.append("--repo-id needs a token: pass --token or set HF_TOKEN")
    for name in ("interim_dir", "output_dir", "log_dir"):
        folder = Path(getattr(settings, name))
        try:
            folder.mkdir(parents=True, exist_ok=True)
        except OSError as error:
            problems.append(f"--{name.replace('_', '-')} {folder} cannot be created ({error.strerror})")
    if problems:
        _fail_usage("; ".join(problems))
    if options.token:
        os.environ["HF_TOKEN"] = options.token  # read by huggingface_hub itself; never in settings or logs
    return settings


def _input_files(target: Optional[Path], options: Options) -> list[Path]:
    """The files a command works on: the folder's *.h5ad in batch mode, else the one FILE."""
    if options.batch_mode:
        folder = options.input_dir.resolve()
        if not folder.is_dir():
            _fail_usage(f"--batch-mode needs a folder: {folder} is not one")
        files = h5ad_files(folder)
        ignored = sorted(p.name for p in folder.iterdir() if p.suffix.lower() != ".h5ad")
        if ignored:
            typer.echo(f"Ignored (not *.h5ad): {', '.join(ignored)}")
        if not files:
            _fail_usage(f"no *.h5ad files in {folder}")
        return files
    if target is None:
        _fail_usage("give an h5ad FILE, or --batch-mode with a folder")
    source = target if target.exists() or target.is_absolute() else options.input_dir / target
    if not source.is_file():
        typer.echo(f"✗ {InputError(source.resolve(), 'no such file')}", err=True)
        raise typer.Exit(1)
    return [source.resolve()]


def _finish(s: PipelineSettings, outcomes: list[DatasetOutcome], started: datetime) -> None:
    directories = {"Input": s.input_dir, "Interim": s.interim_dir, "Output": s.output_dir, "Logs": s.log_dir}
    typer.echo("\n" + render_summary(outcomes, directories))
    try:
        json_path, tsv_path = write_summary(outcomes, Path(s.log_dir), started)
    except OSError as error:  # e.g. the log folder is full: one line, and the batch counts as failed
        typer.echo(f"✗ The batch summary was not written: {error}", err=True)
        raise typer.Exit(1) from None
    typer.echo(f"Summary: {json_path} and {tsv_path}")
    raise typer.Exit(1 if any(o.status == FAILED for o in outcomes) else 0)


@app.command("run-all")
@with_options
def run_all(
    options: Options,
    target: Annotated[Optional[Path], typer.Argument(help="An h5ad file, or a folder with --batch-mode.")] = None,
    example: Annotated[bool, typer.Option("--example", help="Write a small example h5ad into --input-dir and process it offline.")] = False,
) -> None:
    """Every step for one h5ad file, or for every *.h5ad in a folder with --batch-mode."""
    if example:
        h5ad, example_hgnc = write_example(options.input_dir.resolve())
        typer.echo(f"Example dataset written to {h5ad}")
        target, options.offline, options.batch_mode = h5ad, True, False
        options.hgnc_file = options.hgnc_file or example_hgnc
    started = datetime.now(timezone.utc)
    settings = _prepare(options, target, repo_per_dataset=options.batch_mode)
    files = _input_files(target, options)
    outcomes = run_batch(files, settings, EchoReporter(), skip_existing=options.skip_existing, debug=options.debug, fork_here=FORK_HERE)
    _finish(settings, outcomes, started)


def _step_command(step: int) -> Callable[..., None]:
    asset, title = STEPS[step]

    @with_options
    def command(
        options: Options,
        target: Annotated[Optional[Path], typer.Argument(help="An h5ad file (its dataset), or a folder with --batch-mode.")] = None,
    ) -> None:
        settings = _prepare(options, target, repo_per_dataset=options.batch_mode)
        if step == 1:
            raise typer.Exit(0 if run_hgnc(settings, StepReporter(), options.debug, FORK_HERE).success else 1)
        outcomes = run_batch(_input_files(target, options), settings, StepReporter(), steps=(step,), debug=options.debug, fork_here=FORK_HERE)
        raise typer.Exit(1 if any(o.status == FAILED for o in outcomes) else 0)

    command.__doc__ = f"Step {step} only: materialize {asset} ({title.lower()})."
    return command


for _step, _name in ((1, "step1-hgnc-mapper"), (2, "step2-convert-h5ad"), (3, "step3-add-age"), (4, "step4-train-test-split"), (5, "step5-upload")):
    app.command(_name)(_step_command(_step))


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
    instance = cli_instance()
    fail_dead_runs(instance)
    runner = PipelineRunner(PipelineSettings.from_env(), instance)
    for name, path in names.items():
        runner.register(name)
        typer.echo(f"registered {name} <- {path}")
    raise typer.Exit(1 if errors else 0)


if __name__ == "__main__":
    app()
