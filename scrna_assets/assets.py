"""The five assets. Each is a thin wrapper: settings in, one core function, metadata and logs out."""


import time
from collections.abc import Iterator
from contextlib import contextmanager
from pathlib import Path

import polars as pl
from dagster import (
    AssetExecutionContext,
    Config,
    Failure,
    MetadataValue,
    Output,
    asset,
)

from scrna_assets.asset_metadata import CODE_VERSIONS, KINDS, age_chart
from scrna_assets.core.add_age import add_ages
from scrna_assets.core.atomic_files import write_failure_message
from scrna_assets.core.convert import convert_h5ad
from scrna_assets.core.errors import InputError
from scrna_assets.core.hgnc import resolve_hgnc_mapping
from scrna_assets.core.hf_upload import HubUploadError, upload_dataset
from scrna_assets.core.dataset_card import published_splits, write_dataset_card
from scrna_assets.core.split import NOTHING_TO_TRAIN_ON, split_chunks
from scrna_assets.inputs import find_dataset_file, readable_input
from scrna_assets.io_manager import StagedFolder
from scrna_assets.dataset_lock import DatasetBusyError
from scrna_assets.layout import DatasetLayout
from scrna_assets.logs import DatasetLog, StepLog
from scrna_assets.partitions import datasets_partitions
from scrna_assets.provenance import (
    conversion_parameters,
    input_fingerprint,
    mapping_digest,
    quick_hash,
    read_provenance,
    split_parameters,
    write_provenance,
)
from scrna_assets.progress import chunk_reporter
from scrna_assets.resources import PipelineSettings
from scrna_assets.steps import AGED_CHUNKS, HF_UPLOAD, HGNC_MAPPER, PARQUET_CHUNKS, TRAIN_TEST_SPLITS

GROUP = "cell_sentences"


class ConvertConfig(Config):
    h5ad_path: str = ""
    """The input file. Empty: the file in the input folder whose sanitized name is the partition."""


def _fingerprint(source: Path) -> dict:
    try:
        return input_fingerprint(source)
    except FileNotFoundError:
        raise InputError(source, "disappeared while being read; nothing was published") from None


def _layout(settings: PipelineSettings) -> DatasetLayout:
    return DatasetLayout.from_roots(settings.interim_dir, settings.output_dir, settings.log_dir)


@contextmanager
def _dataset_step(settings: PipelineSettings, dataset: str, step: str) -> Iterator[StepLog]:
    """Log the step to the dataset's log; turn bad input into one clear Dagster failure."""
    log = DatasetLog(_layout(settings).dataset_log_dir(dataset), dataset)
    try:
        with StepLog(log, step) as step_log:
            yield step_log
    except InputError as error:
        raise Failure(description=str(error), allow_retries=False) from error
    except (HubUploadError, DatasetBusyError) as error:  # upload errors are scrubbed of the token
        raise Failure(description=str(error)) from error
    except OSError as error:  # a write error (disk full, permissions): that dataset fails, naming the folder
        problem = write_failure_message(error, Path(error.filename)) if error.filename else str(error)
        raise Failure(description=f"{dataset}: {step}: {problem}", allow_retries=False) from error


def _note(context: AssetExecutionContext, step: StepLog, message: str) -> None:
    """Something the user must know about the data: to the dataset log, the Dagster run log, and
    (as the step's ``note`` figure) the CLI and the batch summary."""
    step.note(message)
    step.figures["note"] = "; ".join(filter(None, (step.figures.get("note"), message)))
    context.log.warning(f"{context.partition_key}: {message}")


@contextmanager
def _staging(layout: DatasetLayout, asset: str, dataset: str) -> Iterator[Path]:
    """Clear what a crashed run left and give a fresh staging folder, under the dataset lock that
    the IO manager holds for the whole run; on failure the folder is removed."""
    try:
        layout.clear_stale_staging(asset, dataset)
        with layout.staging(asset, dataset) as staging:
            yield staging
    except ValueError as error:
        if isinstance(error, InputError):  # names its file already; _dataset_step makes it the step's message
            raise
        raise Failure(description=f"{dataset}: {error}", allow_retries=False) from error  # e.g. ages of other chunks


@asset(
    group_name=GROUP, kinds=KINDS[HGNC_MAPPER], code_version=CODE_VERSIONS[HGNC_MAPPER],
    description="Ensembl gene id -> HGNC approved symbol (downloaded, cached, or from --hgnc-file).",
)
def hgnc_mapper(context: AssetExecutionContext, settings: PipelineSettings) -> Output[pl.DataFrame]:
    layout = _layout(settings)
    mapping, source, warning = resolve_hgnc_mapping(settings.hgnc_file, layout.hgnc_download_cache(), settings.offline)
    if warning:
        context.log.warning(warning)
    return Output(mapping, metadata={"rows": mapping.height, "source": source, "warning": warning or ""})


@asset(
    group_name=GROUP, kinds=KINDS[PARQUET_CHUNKS], code_version=CODE_VERSIONS[PARQUET_CHUNKS],
    partitions_def=datasets_partitions, description="Cell sentences and obs columns, one parquet file per chunk of cells.",
)
def parquet_chunks(
    context: AssetExecutionContext, config: ConvertConfig, settings: PipelineSettings, hgnc_mapper: pl.DataFrame
) -> Output[StagedFolder]:
    dataset = context.partition_key
    layout = _layout(settings)
    with _dataset_step(settings, dataset, PARQUET_CHUNKS) as step:
        source = readable_input(Path(config.h5ad_path) if config.h5ad_path else find_dataset_file(Path(settings.input_dir), dataset))
        started = time.perf_counter()
        with _staging(layout, PARQUET_CHUNKS, dataset) as staging:
            before = _fingerprint(source)
            result = convert_h5ad(
                source,
                dataset,
                staging / "chunks",
                dict(zip(hgnc_mapper["ensembl_gene_id"], hgnc_mapper["symbol"])),
                settings.chunk_size,
                settings.top_genes,
                settings.interim_compression,
                settings.matrix,
                seed=settings.seed,
                tie_break=settings.tie_break,
                progress=chunk_reporter(PARQUET_CHUNKS, context.log.info),
            )
            if _fingerprint(source) != before:
                raise InputError(source, "changed while being read (size or mtime differ); nothing was published")
            matrix_facts = {
                "matrix_used": result.matrix, "matrix_encoding": result.matrix_encoding,
                "matrix_dtype": result.value_dtype, "matrix_integer_values": result.integer_values,
            }
            write_provenance(staging, {
                "input": before,
                "source": result.source_facts,
                "parameters": conversion_parameters(settings, mapping_digest(hgnc_mapper)),
                "figures": {"cells": result.n_cells, "genes": result.n_vars, **matrix_facts, **result.gene_counts},
            })
        if not result.integer_values:
            _note(context, step, f"matrix {result.matrix} holds non-integer values: sentences rank them as they are "
                                 "(per-cell scaling keeps each cell's ranking; per-gene scaling would not)")
        step.figures.update(
            source=str(source), cells=result.n_cells, genes=result.n_vars, **matrix_facts, chunks=len(result.chunk_files),
            empty_sentences=result.empty_sentences, seconds=round(time.perf_counter() - started, 3),
            **result.gene_counts,
        )
    metadata = dict(step.figures, source=MetadataValue.path(str(source)), input_quick_hash=quick_hash(source))
    return Output(StagedFolder(staging), metadata=metadata)


@asset(
    group_name=GROUP, kinds=KINDS[AGED_CHUNKS], code_version=CODE_VERSIONS[AGED_CHUNKS],
    partitions_def=datasets_partitions, description="The donor age in years of every cell (cell_id, age), one file per parquet_chunks file.",
)
def aged_chunks(context: AssetExecutionContext, settings: PipelineSettings, parquet_chunks: Path) -> Output[StagedFolder]:
    dataset = context.partition_key
    layout = _layout(settings)
    with _dataset_step(settings, dataset, AGED_CHUNKS) as step:
        started = time.perf_counter()
        with _staging(layout, AGED_CHUNKS, dataset) as staging:
            result = add_ages(
                parquet_chunks / "chunks", staging / "chunks", settings.interim_compression, progress=chunk_reporter(AGED_CHUNKS, context.log.info)
            )
            record = read_provenance(parquet_chunks) or {}
            record.setdefault("figures", {}).update(
                cells_with_age=result.with_age, cells_without_age=result.without_age, age_label_kinds=result.label_kinds,
            )
            write_provenance(staging, record)
        for note in result.notes:
            _note(context, step, note)
        step.figures.update(
            cells=result.n_cells, cells_with_age=result.with_age, cells_without_age=result.without_age,
            cells_with_bounds_only=result.with_bounds, age_source=result.age_source, distinct_ages=len(result.age_counts),
            age_label_kinds=result.label_kinds, seconds=round(time.perf_counter() - started, 3),
        )
        if result.unparsed_labels:
            step.figures["stages_without_age"] = result.unparsed_labels
    histogram = "\n".join(["| age (years) | cells |", "|---|---|"] + [f"| {a:g} | {n} |" for a, n in result.age_counts.items()])
    return Output(StagedFolder(staging), metadata=dict(
        step.figures, age_histogram=MetadataValue.md(histogram), age_chart=MetadataValue.md(age_chart(result.age_counts)),
    ))


@asset(
    group_name=GROUP, kinds=KINDS[TRAIN_TEST_SPLITS], code_version=CODE_VERSIONS[TRAIN_TEST_SPLITS],
    partitions_def=datasets_partitions, description="Cells with an age, with their age, split into train/test (or one chunks/ folder with --skip-train-test-split).",
)
def train_test_splits(
    context: AssetExecutionContext, settings: PipelineSettings, parquet_chunks: Path, aged_chunks: Path
) -> Output[StagedFolder]:
    dataset = context.partition_key
    layout = _layout(settings)
    with _dataset_step(settings, dataset, TRAIN_TEST_SPLITS) as step:
        started = time.perf_counter()
        with _staging(layout, TRAIN_TEST_SPLITS, dataset) as staging:
            if settings.skip_train_test_split:  # every aged cell into <name>/chunks/
                train_folder, test_folder = staging / "chunks", None
            else:
                train_folder, test_folder = staging / "train" / "chunks", staging / "test" / "chunks"
            record = read_provenance(aged_chunks) or {}
            converted = read_provenance(parquet_chunks) or {}
            if (record.get("input"), record.get("parameters")) != (converted.get("input"), converted.get("parameters")):
                raise ValueError(f"the ages in {aged_chunks} were made from an earlier conversion: materialize aged_chunks again")
            result = split_chunks(
                parquet_chunks / "chunks", aged_chunks / "chunks", train_folder, test_folder, settings.test_size, settings.seed,
                settings.split_by, settings.compression, settings.chunk_size,
                include_age_ranges=settings.include_age_ranges, primary_only=settings.primary_only,
                progress=chunk_reporter(TRAIN_TEST_SPLITS, context.log.info),
            )
            split_figures = {
                "split_by": result.mode, "split_note": result.mode_note,
                "train_cells": result.train_cells, "test_cells": result.test_cells,
                "train_donors": result.train_donors, "test_donors": result.test_donors, "donors_in_both": result.donors_in_both,
                "primary_cells": result.primary_cells, "non_primary_cells": result.non_primary_cells,
                "non_primary_dropped": result.non_primary_dropped,
            }
            record.setdefault("parameters", {}).update(split_parameters(settings))
            record.setdefault("figures", {}).update(split_figures)
            write_provenance(staging, record)
            write_dataset_card(staging, record, dataset)
        for note in result.notes:
            _note(context, step, note)
        step.figures.update(
            **split_figures,
            test_share=round(result.test_share, 6), cells_without_age_left_out=result.without_age,
            cells_kept_by_age_bounds=result.kept_by_bounds, seconds=round(time.perf_counter() - started, 3),
        )
    return Output(StagedFolder(staging), metadata=dict(step.figures))


@asset(
    group_name=GROUP, kinds=KINDS[HF_UPLOAD], code_version=CODE_VERSIONS[HF_UPLOAD],
    partitions_def=datasets_partitions, description="The split dataset on the HuggingFace Hub (skipped without --repo-id).",
)
def hf_upload(context: AssetExecutionContext, settings: PipelineSettings, train_test_splits: Path) -> Output[dict]:
    dataset = context.partition_key
    with _dataset_step(settings, dataset, HF_UPLOAD) as step:
        splits = published_splits(train_test_splits)
        if not settings.repo_id:
            record = {"status": "skipped", "reason": "no repository configured (--repo-id or SCRNA_REPO_ID)"}
        elif not splits:  # no empty repository on the Hub
            record = {"status": "skipped", "reason": NOTHING_TO_TRAIN_ON}
        else:
            repo_id = f"{settings.repo_id}-{dataset}" if settings.repo_per_dataset else settings.repo_id
            details = read_provenance(train_test_splits) or {}
            record = upload_dataset(train_test_splits, repo_id, settings.private, details)
        step.figures.update(record)
    return Output(record, metadata=dict(record))


ALL_ASSETS = [hgnc_mapper, parquet_chunks, aged_chunks, train_test_splits, hf_upload]
