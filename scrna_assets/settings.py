"""Every setting, declared once: its type and allowed values, default, bounds, help text, the
environment variable that sets it, and the steps whose outputs it changes.

The CLI's options, the environment loading, the Dagster resource (``resources``), the provenance
parameters (``provenance``) and the dataset card's parameter table all come from this one model.
Precedence, for the CLI and the code location alike: command-line option > ``SCRNA_*`` variable >
default. Folder roots given on the command line are relative to the current folder; from a
variable or by default, to ``SCRNA_HOME`` (default: the current folder).

Importing this module imports pydantic only, so ``preprocess --help`` starts at once.
"""

from __future__ import annotations

import os
from dataclasses import dataclass
from pathlib import Path
from typing import Annotated, Any, Literal, Optional, get_args, get_origin

from pydantic import BaseModel, ConfigDict, Field, ValidationError

ENV_PREFIX = "SCRNA_"
HOME_VARIABLE = f"{ENV_PREFIX}HOME"
CONVERSION, SPLIT = "conversion", "split"
"""The steps whose provenance records a setting: it changes their outputs."""
ROOTS = ("input_dir", "interim_dir", "output_dir", "log_dir")
PATHS = (*ROOTS, "hgnc_file")


@dataclass(frozen=True)
class Role:
    """How a setting is used besides being a field: in which steps' provenance, and whether the
    ``preprocess`` commands take it as an option (settings of the code location only do not)."""

    steps: tuple[str, ...] = ()
    option: bool = True


class Settings(BaseModel):
    """Everything a run needs to know. Roots are absolute paths once loaded, so no step depends on
    the working folder."""

    model_config = ConfigDict(frozen=True, extra="forbid")

    input_dir: Annotated[str, Field(description="Folder of input h5ad files."), Role()] = "data/input"
    interim_dir: Annotated[str, Field(description="Folder for interim chunks."), Role()] = "data/interim"
    output_dir: Annotated[str, Field(description="Folder for the final chunks."), Role()] = "data/output"
    log_dir: Annotated[str, Field(description="Folder for logs and batch summaries."), Role()] = "logs"
    chunk_size: Annotated[int, Field(ge=1, description="Cells per chunk (bounds memory)."), Role((CONVERSION,))] = 10_000
    top_genes: Annotated[int, Field(ge=0, description="Genes per cell sentence; 0 = all expressed genes."), Role((CONVERSION,))] = 2000
    compression: Annotated[
        Literal["zstd", "snappy", "gzip", "brotli", "lz4", "none"], Field(description="Parquet codec of the output files."), Role((SPLIT,))
    ] = "zstd"
    interim_compression: Annotated[
        Literal["zstd", "snappy", "gzip", "brotli", "lz4", "none"],
        Field(description="Parquet codec of the interim chunks, which live until the split has read them (unless --keep-interim)."),
        Role(),
    ] = "lz4"
    matrix: Annotated[
        Literal["auto", "raw.X", "counts", "X"],
        Field(description="Count matrix: auto (raw.X, then layers['counts'], then X), raw.X, counts or X."), Role((CONVERSION,)),
    ] = "auto"
    tie_break: Annotated[
        Literal["random", "position"],
        Field(description="Order of genes with equal values: random (seeded, per cell) or position (var order)."), Role((CONVERSION,)),
    ] = "random"
    seed: Annotated[int, Field(description="Seed of the train/test split and of the random tie-break."), Role((CONVERSION, SPLIT))] = 42
    test_size: Annotated[float, Field(gt=0, lt=1, description="Share of aged cells for the test split, in (0, 1)."), Role((SPLIT,))] = 0.05
    split_by: Annotated[
        Literal["auto", "donor", "cell"],
        Field(description="auto (donor when there is a donor_id column, else cell), donor or cell."), Role((SPLIT,)),
    ] = "auto"
    include_age_ranges: Annotated[
        bool, Field(description="Also keep cells whose stage gives age bounds only (ranges, 'and over')."), Role((SPLIT,))
    ] = False
    primary_only: Annotated[bool, Field(description="Drop cells with is_primary_data = False before the split."), Role((SPLIT,))] = False
    skip_train_test_split: Annotated[
        bool, Field(description="Write aged cells to <output>/<name>/chunks/ without splitting."), Role((SPLIT,))
    ] = False
    license: Annotated[
        str, Field(min_length=1, description="Dataset card license when the source does not fix it (CELLxGENE files: cc-by-4.0)."),
        Role((SPLIT,)),
    ] = "other"
    hgnc_file: Annotated[Optional[str], Field(description="Local HGNC complete set (TSV or parquet)."), Role()] = None
    offline: Annotated[bool, Field(description="Never download the HGNC table."), Role()] = False
    workers: Annotated[int, Field(ge=0, description="Datasets processed at once in a batch, each in its own process; 0 = one per core (a file of more than one chunk counts as two), as many as memory holds."), Role()] = 0
    keep_interim: Annotated[bool, Field(description="Keep interim chunks after a successful split."), Role()] = False
    repo_id: Annotated[Optional[str], Field(description="HuggingFace dataset repository (batch: <repo-id>-<name>)."), Role()] = None
    private: Annotated[bool, Field(description="Create repositories private (--public: public)."), Role()] = True
    repo_per_dataset: Annotated[
        bool, Field(description="Upload each dataset to <repo_id>-<name> (the CLI's batch mode sets it)."), Role(option=False)
    ] = False
    sensor_interval: Annotated[int, Field(ge=1, description="Seconds between two ticks of the file sensor."), Role(option=False)] = 30
    sensor_settle_seconds: Annotated[
        float, Field(ge=0, description="Age a file must reach (unchanged) before the sensor runs it."), Role(option=False)
    ] = 10.0
    min_age_share: Annotated[
        float, Field(ge=0, le=1, description="Check share_of_cells_with_age warns below this share."), Role(option=False)
    ] = 0.5
    max_empty_share: Annotated[
        float, Field(ge=0, le=1, description="Check empty_sentence_share warns above this share."), Role(option=False)
    ] = 0.05

    @classmethod
    def load(cls, given: dict[str, Any] | None = None, environ: dict[str, str] | None = None) -> Settings:
        """Options given on the command line, then ``SCRNA_*`` variables, then defaults; roots made
        absolute. Raises ``SettingsError`` listing every invalid value with where it came from."""
        given = {k: v for k, v in (given or {}).items() if v is not None}
        env = os.environ if environ is None else environ
        home = Path(env.get(HOME_VARIABLE) or ".").resolve()
        values: dict[str, Any] = {}
        sources: dict[str, str] = {}
        for name in cls.model_fields:
            if name in given:
                values[name], sources[name] = given[name], option_name(name)
                if name in PATHS:
                    values[name] = str(Path(given[name]).resolve())
            elif env.get(env_name(name)) or (env_name(name) in env and name not in PATHS):
                values[name], sources[name] = _from_text(name, env[env_name(name)]), env_name(name)
                if name in PATHS and values[name]:
                    values[name] = str((home / values[name]).resolve())
            elif name in ROOTS:
                values[name] = str((home / cls.model_fields[name].default).resolve())
        try:
            return cls(**values)
        except ValidationError as error:
            raise SettingsError([_problem(e, sources) for e in error.errors()]) from None

    def problems(self) -> list[str]:
        """What the model's types cannot say: files that must exist."""
        if self.hgnc_file and not Path(self.hgnc_file).is_file():
            return [f"--hgnc-file {self.hgnc_file}: no such file"]
        return []

    def parameters(self, step: str) -> dict[str, Any]:
        """The settings that change the outputs of ``step``: what its provenance records."""
        return {name: getattr(self, name) for name in self.model_fields if step in role(name).steps}


class SettingsError(ValueError):
    def __init__(self, problems: list[str]) -> None:
        self.problems = problems
        super().__init__("; ".join(problems))


def role(name: str) -> Role:
    return next(m for m in Settings.model_fields[name].metadata if isinstance(m, Role))


def env_name(name: str) -> str:
    return f"{ENV_PREFIX}{name.upper()}"


def option_name(name: str) -> str:
    return "--" + name.replace("_", "-")


def choices(name: str) -> tuple[str, ...] | None:
    """The allowed values of a ``Literal`` setting (None for any other)."""
    annotation = Settings.model_fields[name].annotation
    return get_args(annotation) if get_origin(annotation) is Literal else None


def _from_text(name: str, text: str) -> Any:
    """An environment variable's text as the setting's type (pydantic then checks it)."""
    annotation = Settings.model_fields[name].annotation
    if annotation is bool:
        lowered = text.strip().lower()
        return True if lowered in ("1", "true", "yes", "on") else False if lowered in ("0", "false", "no", "off", "") else text
    return text or None if annotation == Optional[str] else text


def _problem(error: Any, sources: dict[str, str]) -> str:
    name = str(error["loc"][0]) if error["loc"] else ""
    where = sources.get(name, option_name(name))
    if error["type"] == "literal_error":
        rule = f"must be one of {', '.join(choices(name) or ())}"
    elif error["type"] in ("greater_than_equal", "greater_than", "less_than_equal", "less_than"):
        rule = "must be " + " and ".join(f"{_BOUNDS[type(m).__name__]} {getattr(m, type(m).__name__.lower())}"
                                         for m in Settings.model_fields[name].metadata if type(m).__name__ in _BOUNDS)
    else:
        rule = error["msg"].lower()
    return f"{where} {rule} (got {error['input']!r})"


_BOUNDS = {"Ge": ">=", "Gt": ">", "Le": "<=", "Lt": "<"}
