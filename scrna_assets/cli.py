"""`preprocess`: run the Dagster assets from the shell, for one file or a whole folder.

Every command shares the pipeline options, generated from ``settings.Settings``; each runs the same
assets as the UI does. Importing this module loads no Dagster, numba, anndata or pyarrow: they
load when work starts, so ``--help`` answers at once.
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
from typing import TYPE_CHECKING, Annotated, Any, NoReturn, Optional

import typer

from scrna_assets.core.errors import InputError
from scrna_assets.inputs import datasets_by_name, h5ad_files
from scrna_assets.progress import StepProgress
from scrna_assets.settings import Settings, SettingsError, env_name, option_name, role
from scrna_assets.steps import BY_NUMBER, STEPS
from scrna_assets.summary import FAILED, RULE, DatasetOutcome, render_summary, write_summary

if TYPE_CHECKING:
    from scrna_assets.runner import StepResult

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
OPTION_SETTINGS = tuple(name for name in Settings.model_fields if role(name).option)


@dataclass
class Options:
    """The settings given on the command line (the others come from SCRNA_* variables or the
    defaults), and the options of the command itself."""

    given: dict[str, Any]
    skip_existing: bool
    batch_mode: bool
    token: Optional[str]
    debug: bool


def _setting_parameter(name: str) -> inspect.Parameter:
    """A Typer option for one setting: its help, choices, default and variable, from the model."""
    field = Settings.model_fields[name]
    declarations = ["--private/--public"] if name == "private" else []
    option = typer.Option(*declarations, help=field.description, envvar=env_name(name), show_envvar=True)
    return inspect.Parameter(name, inspect.Parameter.KEYWORD_ONLY, annotation=Annotated[field.annotation, option], default=field.default)


_COMMAND_PARAMETERS = [
    ("skip_existing", Annotated[bool, typer.Option(help="Skip datasets whose outputs are up to date (same file, parameters, checks passed).")], False),
    ("batch_mode", Annotated[bool, typer.Option(help="Process every *.h5ad in the folder (--input-dir or the argument).")], False),
    ("token", Annotated[Optional[str], typer.Option(envvar="HF_TOKEN", show_envvar=True, help="HuggingFace token (default: the one `hf auth login` saved).")], None),
    ("debug", Annotated[bool, typer.Option(help="Show Dagster's logs.")], False),
]


def with_options(command: Callable[..., None]) -> Callable[..., None]:
    """Give a command every pipeline option and pass them to it as one ``Options``."""
    own = [p for p in inspect.signature(command, eval_str=True).parameters.values() if p.name != "options"]
    shared = [_setting_parameter(name) for name in OPTION_SETTINGS] + [
        inspect.Parameter(name, inspect.Parameter.KEYWORD_ONLY, annotation=annotation, default=default)
        for name, annotation, default in _COMMAND_PARAMETERS
    ]

    @functools.wraps(command)
    def wrapper(context: typer.Context, **kwargs: Any) -> None:
        on_command_line = {
            name: kwargs.pop(name) for name in OPTION_SETTINGS if context.get_parameter_source(name).name == "COMMANDLINE"
        }
        for name in OPTION_SETTINGS:
            kwargs.pop(name, None)  # from a variable or the default: Settings.load reads those itself
        options = Options(on_command_line, **{name: kwargs.pop(name) for name, _, _ in _COMMAND_PARAMETERS})
        command(options=options, **kwargs)

    parameters = [inspect.Parameter("context", inspect.Parameter.POSITIONAL_OR_KEYWORD, annotation=typer.Context), *own, *shared]
    wrapper.__signature__ = inspect.Signature(parameters)  # type: ignore[attr-defined]
    wrapper.__annotations__ = {p.name: p.annotation for p in parameters}
    del wrapper.__wrapped__  # typer must read the new signature, not the command's
    return wrapper


class EchoReporter:
    """Prints the seed's banners as the runner goes, and keeps step 1's warnings for the summary."""

    def __init__(self) -> None:
        self.warnings: list[str] = []
        self.bar = StepProgress()

    def progress(self, step: int, done: int, total: int) -> None:
        self.bar.update(done, total)

    def file(self, index: int, total: int, dataset: str) -> None:
        typer.echo(f"\n{'#' * 60}\nPROCESSING FILE {index}/{total}: {dataset}\n{'#' * 60}")

    def step(self, step: int, result: StepResult | None) -> None:
        if result is not None:
            self.bar.stop()
        if result is None:
            typer.echo(f"\n{RULE}\nSTEP {step}: {BY_NUMBER[step].title}\n{RULE}")
            self.bar.start(step, BY_NUMBER[step].title)
        elif result.success:
            shown = ", ".join(f"{k}={result.figures[k]}" for k in STEP_FIGURES[step] if k in result.figures)
            typer.echo(f"  {shown}")
            if result.figures.get("warning"):
                typer.echo(f"  ! {result.figures['warning']}")
                self.warnings.append(f"step {step} ({result.asset}): {result.figures['warning']}")
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


def _fail_usage(message: str) -> NoReturn:
    typer.echo(f"Error: {message}", err=True)
    raise typer.Exit(2)


def _load(given: dict[str, Any]) -> Settings:
    try:
        return Settings.load(given)
    except SettingsError as error:
        _fail_usage("; ".join(error.problems))


def _prepare(options: Options, target: Optional[Path], repo_per_dataset: bool) -> Settings:
    """Validate every setting up front (exit code 2 with every problem); then the settings every
    dataset process gets."""
    given = dict(options.given, repo_per_dataset=repo_per_dataset)
    if options.batch_mode and target is not None:
        given["input_dir"] = str(target)
    settings = _load(given)
    problems = settings.problems()
    if settings.repo_id and not options.token:
        from scrna_assets.core.hf_upload import hub_token_available

        if not hub_token_available():
            problems.append("--repo-id needs a token: pass --token, set HF_TOKEN or run `hf auth login`")
    for name in ("interim_dir", "output_dir", "log_dir"):
        folder = Path(getattr(settings, name))
        try:
            folder.mkdir(parents=True, exist_ok=True)
        except OSError as error:
            problems.append(f"{option_name(name)} {folder} cannot be created ({error.strerror})")
    if problems:
        _fail_usage("; ".join(problems))
    if options.token:
        os.environ["HF_TOKEN"] = options.token  # read by huggingface_hub itself; never in settings or logs
    return settings


def _input_files(target: Optional[Path], options: Options, settings: Settings) -> list[Path]:
    """The files a command works on: the folder's *.h5ad in batch mode, else the one FILE."""
    if options.batch_mode:
        folder = Path(settings.input_dir)
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
    source = target if target.exists() or target.is_absolute() else Path(settings.input_dir) / target
    if not source.is_file():
        typer.echo(f"✗ {InputError(source.resolve(), 'no such file')}", err=True)
        raise typer.Exit(1)
    return [source.resolve()]


def _finish(s: Settings, outcomes: list[DatasetOutcome], started: datetime, warnings: list[str]) -> None:
    directories = {"Input": s.input_dir, "Interim": s.interim_dir, "Output": s.output_dir, "Logs": s.log_dir}
    typer.echo("\n" + render_summary(outcomes, directories, warnings, s.output_dir, s.repo_id if not s.repo_per_dataset else None))
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
    from scrna_assets.batch import run_batch

    if example:
        from scrna_assets.core.example import write_example

        h5ad, example_hgnc = write_example(Path(_load(options.given).input_dir))
        typer.echo(f"Example dataset written to {h5ad}")
        target, options.batch_mode = h5ad, False
        options.given = {"hgnc_file": str(example_hgnc), **options.given, "offline": True}
    started = datetime.now(timezone.utc)
    settings = _prepare(options, target, repo_per_dataset=options.batch_mode)
    files = _input_files(target, options, settings)
    reporter = EchoReporter()
    outcomes = run_batch(files, settings, reporter, skip_existing=options.skip_existing, debug=options.debug, fork_here=FORK_HERE)
    _finish(settings, outcomes, started, reporter.warnings)


def _step_command(number: int) -> Callable[..., None]:
    step = BY_NUMBER[number]

    @with_options
    def command(
        options: Options,
        target: Annotated[Optional[Path], typer.Argument(help="An h5ad file (its dataset), or a folder with --batch-mode.")] = None,
    ) -> None:
        from scrna_assets.batch import run_batch, run_hgnc

        settings = _prepare(options, target, repo_per_dataset=options.batch_mode)
        if not step.partitioned:
            raise typer.Exit(0 if run_hgnc(settings, StepReporter(), options.debug, FORK_HERE).success else 1)
        files = _input_files(target, options, settings)
        outcomes = run_batch(files, settings, StepReporter(), steps=(number,), debug=options.debug, fork_here=FORK_HERE)
        raise typer.Exit(1 if any(o.status == FAILED for o in outcomes) else 0)

    command.__doc__ = f"Step {number} only: materialize {step.asset} ({step.title.lower()})."
    return command


for _step in STEPS:
    app.command(_step.command)(_step_command(_step.number))


@app.command("register")
def register(
    paths: Annotated[Optional[list[Path]], typer.Argument(help="h5ad files or folders of them (default: the input folder).")] = None,
) -> None:
    """Add datasets as dynamic partitions, so the UI and `dagster asset materialize --partition` see
    them (Dagster's own CLI has no command for adding a dynamic partition)."""
    from scrna_assets.run_liveness import fail_dead_runs
    from scrna_assets.runner import PipelineRunner, cli_instance
    from scrna_assets.resources import PipelineSettings

    settings = _load({})
    files: list[Path] = []
    for path in paths or [Path(settings.input_dir)]:
        path = path.resolve()
        files += h5ad_files(path) if path.is_dir() else [path]
    names, errors = datasets_by_name(files)
    for error in errors:
        typer.echo(f"✗ {error}", err=True)
    instance = cli_instance()
    fail_dead_runs(instance)
    runner = PipelineRunner(PipelineSettings.of(settings), instance)
    for name, path in names.items():
        runner.register(name)
        typer.echo(f"registered {name} <- {path}")
    raise typer.Exit(1 if errors else 0)


if __name__ == "__main__":
    app()
