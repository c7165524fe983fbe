"""convert_h5ad: the interim parquet contract (columns, sentences, chunk files, determinism).

Sentences are checked against a per-cell reference of the contract with the default random
tie-break (seed 42: order within equal values by the tie key of the specification, computed in
plain Python), and with ``tie_break="position"`` (var order) where a test is about that."""

from __future__ import annotations

import warnings
from functools import lru_cache
from pathlib import Path

import anndata
import numpy as np
import pyarrow as pa
import pyarrow.parquet as pq
import pytest

from scrna_assets.core.convert import ConvertResult, convert_h5ad, output_column_names
from scrna_assets.core.errors import InputError
from scrna_assets.core.hgnc import read_hgnc_table
from scrna_assets_tests.core import h5ad_factory as factory
from scrna_assets_tests.core.test_sentences import spec_tie_key

PERTURBSEQ = "cxg_schema7.1_small_perturbations_marson_cd4_perturbseq.h5ad"
HEART = "cxg_schema7_example_valid_unlabeled_heart320.h5ad"
TINY = "cxg_schema7_example_valid_unlabeled_tiny2x7.h5ad"
TENX = "tiledbsoma_10x_multiome_subset_100x100_counts.h5ad"
N_GENES = [3, 0, 2, 5, 1, 3, 1]  # words in factory.SENTENCES


def run(path: Path, out: Path, chunk_size: int = 3, top_genes: int = 0, mapping: dict[str, str] | None = None, matrix: str = "auto",
        dataset: str = "ds", **options) -> ConvertResult:
    return convert_h5ad(path, dataset, out, factory.HGNC_MAP if mapping is None else mapping, chunk_size, top_genes, "zstd", matrix, **options)


def read_all(result: ConvertResult) -> pa.Table:
    return pa.concat_tables([pq.read_table(p) for p in result.chunk_files])


def gene_counts(total: int, mapped: int, fallback: int, dropped: int, duplicates: int) -> dict[str, int]:
    return {
        "genes_total": total,
        "genes_mapped_hgnc": mapped,
        "genes_fallback": fallback,
        "genes_dropped": dropped,
        "genes_duplicate_token": duplicates,
    }


def sentence_of(values: np.ndarray, tokens: list[str | None], top_genes: int = 0, cell: str | None = None, dataset: str = "ds", seed: int = 42) -> str:
    """Reference sentence: tokened genes with value > 0, value desc, then (with a ``cell`` id: the
    random tie-break) tie key, then var position."""
    genes = [
        (-float(v), spec_tie_key(seed, dataset, cell, tokens[j]) if cell is not None else 0, j)
        for j, v in enumerate(values)
        if v > 0 and tokens[j] is not None
    ]
    genes.sort()
    if top_genes:
        genes = genes[:top_genes]
    return " ".join(tokens[j] for _, _, j in genes)


def random_sentences(dataset: str = "ds", tokens: list[str | None] = factory.TOKENS, top_genes: int = 0) -> list[str]:
    """The reference sentences of ``factory.COUNTS`` (cells ``factory.CELL_IDS``) with the random tie-break."""
    return [sentence_of(row, tokens, top_genes, cell, dataset) for row, cell in zip(factory.COUNTS, factory.CELL_IDS)]


# factory.SENTENCES with the random tie-break (seed 42), pinned: rows 0 (GB = GD) and 3 (all equal)
RANDOM_SENTENCES_DS = ["GD GB GC", "", "GA GE", "GB GA GE GC GD", "GC", "GE GB GA", "GB"]


def read_adata(path: Path) -> anndata.AnnData:
    with warnings.catch_warnings():
        warnings.simplefilter("ignore")
        return anndata.read_h5ad(path)


@lru_cache(maxsize=1)
def _hgnc(path: str) -> dict[str, str]:
    table = read_hgnc_table(path)
    return dict(zip(table["ensembl_gene_id"].to_list(), table["symbol"].to_list()))


@pytest.fixture
def hgnc(shared_data: Path) -> dict[str, str]:
    return _hgnc(str(shared_data / "hgnc" / "hgnc_complete_set.parquet"))


# -- synthetic inputs: exact values -----------------------------------------------------------
@pytest.mark.parametrize("fmt", factory.MATRIX_FORMATS)
def test_sentences_columns_and_files_exact(tmp_path: Path, fmt: str) -> None:
    """The whole output of a 7x5 input, pinned: columns, order, types, sentences, n_genes, files."""
    path = factory.write_counts(tmp_path / "in.h5ad", fmt)
    result = run(path, tmp_path / "out" / "chunks", chunk_size=3, dataset="my_ds")
    assert [p.name for p in result.chunk_files] == ["chunk_0000.parquet", "chunk_0001.parquet", "chunk_0002.parquet"]
    assert sorted(p.name for p in (tmp_path / "out" / "chunks").iterdir()) == [p.name for p in result.chunk_files]
    assert [pq.read_metadata(p).num_rows for p in result.chunk_files] == [3, 3, 1]
    table = read_all(result)
    assert table.schema == pa.schema(
        [
            ("cell_id", pa.string()),
            ("dataset", pa.string()),
            ("donor_id", pa.string()),
            ("organism", pa.string()),
            ("cell_sentence", pa.string()),
            ("n_genes", pa.int32()),
        ]
    )
    assert table.column("organism").null_count == 7  # no organism in obs or uns
    assert table.column("cell_id").to_pylist() == factory.CELL_IDS
    assert table.column("dataset").to_pylist() == ["my_ds"] * 7
    assert table.column("donor_id").to_pylist() == ["d0", "d1"] * 3 + ["d0"]
    # random tie-break, dataset "my_ds": rows 0 (GB = GD) and 3 (all five equal) pinned
    assert table.column("cell_sentence").to_pylist() == ["GB GD GC", "", "GA GE", "GA GD GE GB GC", "GC", "GE GB GA", "GB"]
    assert table.column("cell_sentence").to_pylist() == random_sentences("my_ds")
    assert table.column("n_genes").to_pylist() == N_GENES
    assert table.column("cell_sentence").null_count == 0
    assert (result.n_cells, result.n_vars, result.matrix, result.matrix_encoding) == (7, 5, "X", fmt)
    assert result.empty_sentences == 1
    assert result.gene_counts == gene_counts(5, 3, 2, 0, 0)


def test_top_genes_limits_sentence(tmp_path: Path) -> None:
    """top_genes=2 keeps the two highest, cut after the tie-break (random: row 3 keeps the two of
    its five equal genes with the smallest tie keys; position: the first two in var order);
    n_genes counts the kept words."""
    path = factory.write_counts(tmp_path / "in.h5ad")
    table = read_all(run(path, tmp_path / "out", top_genes=2))
    assert table.column("cell_sentence").to_pylist() == ["GD GB", "", "GA GE", "GB GA", "GC", "GE GB", "GB"]
    assert table.column("cell_sentence").to_pylist() == random_sentences(top_genes=2)
    assert table.column("n_genes").to_pylist() == [2, 0, 2, 2, 1, 2, 1]
    table = read_all(run(path, tmp_path / "position", top_genes=2, tie_break="position"))
    assert table.column("cell_sentence").to_pylist() == ["GB GD", "", "GA GE", "GA GB", "GC", "GE GB", "GB"]
    assert table.column("n_genes").to_pylist() == [2, 0, 2, 2, 1, 2, 1]


@pytest.mark.parametrize("chunk_size", [1, 3, 7, 100])
def test_csc_and_dense_outputs_equal_csr(tmp_path: Path, chunk_size: int) -> None:
    """Storage format does not change any output byte-relevant content, for several chunk sizes."""
    tables = {}
    for fmt in factory.MATRIX_FORMATS:
        path = factory.write_random(tmp_path / f"{fmt}.h5ad", fmt, n_obs=23, n_vars=11, seed=3)
        result = run(path, tmp_path / fmt / "chunks", chunk_size=chunk_size, mapping={})
        assert [pq.read_metadata(p).num_rows for p in result.chunk_files] == [
            min(chunk_size, 23 - s) for s in range(0, 23, chunk_size)
        ]
        tables[fmt] = read_all(result)
    assert tables["csc"].equals(tables["csr"])
    assert tables["dense"].equals(tables["csr"])
    values = factory.random_counts(23, 11, 3)
    tokens = [f"g{j}" for j in range(11)]
    assert tables["csr"].column("cell_sentence").to_pylist() == [sentence_of(row, tokens, cell=f"cell{i}") for i, row in enumerate(values)]


def test_no_csc_spill_left_next_to_output(tmp_path: Path) -> None:
    """CSC spills next to the output folder; after conversion only the output folder remains."""
    path = factory.write_counts(tmp_path / "in" / "in.h5ad", "csc")
    run(path, tmp_path / "work" / "chunks")
    assert [p.name for p in (tmp_path / "work").iterdir()] == ["chunks"]


@pytest.mark.parametrize(
    ("writer", "matrix_name"),
    [
        (lambda p: factory.write_integer(p, "csr", np.int64), "X"),
        (lambda p: factory.write_integer(p, "dense", np.int32), "X"),
        (lambda p: factory.write_float64(p, "csc"), "X"),
        (factory.write_stored_zero, "X"),
        (factory.write_with_raw, "raw.X"),
        (lambda p: factory.write_with_counts_layer(p, with_raw=False), "counts"),
    ],
    ids=["int64-csr", "int32-dense", "float64-csc", "stored-zero", "raw-other-var", "counts-layer"],
)
def test_same_sentences_from_every_matrix_variant(tmp_path: Path, writer, matrix_name: str) -> None:
    """Integer/float64 dtypes, stored zeros, raw with its own var, and a counts layer all give
    the same sentences as the plain CSR input (stored zeros are not expressed)."""
    result = run(writer(tmp_path / "in.h5ad"), tmp_path / "out")
    assert result.matrix == matrix_name
    assert result.n_vars == 5
    table = read_all(result)
    assert table.column("cell_sentence").to_pylist() == RANDOM_SENTENCES_DS
    assert table.column("n_genes").to_pylist() == N_GENES


def test_var_without_feature_name_drops_unmapped_ensembl(tmp_path: Path) -> None:
    """Without feature_name, Ensembl ids HGNC does not know give no token and never appear."""
    path = factory.write_counts(tmp_path / "in.h5ad", var=factory.gene_var(with_feature_name=False))
    result = run(path, tmp_path / "out")
    table = read_all(result)
    assert table.column("cell_sentence").to_pylist() == ["GB GC", "", "GA", "GB GA GC", "GC", "GB GA", "GB"]
    assert table.column("cell_sentence").to_pylist() == random_sentences(tokens=["GA", "GB", "GC", None, None])
    assert table.column("n_genes").to_pylist() == [2, 0, 1, 3, 1, 2, 1]
    assert result.empty_sentences == 1
    assert result.gene_counts == gene_counts(5, 3, 0, 2, 0)


def test_tenx_var_maps_gene_ids(tmp_path: Path) -> None:
    """10x var: HGNC symbol of ``gene_ids`` where known, else the symbol index."""
    path = factory.write_counts(tmp_path / "in.h5ad", var=factory.tenx_var())
    result = run(path, tmp_path / "out")
    assert read_all(result).column("cell_sentence").to_pylist() == RANDOM_SENTENCES_DS
    assert result.gene_counts == gene_counts(5, 3, 2, 0, 0)


@pytest.mark.parametrize("fmt", factory.MATRIX_FORMATS)
def test_no_genes_gives_empty_sentences(tmp_path: Path, fmt: str) -> None:
    """A matrix with no columns: every cell gets the empty sentence (never null) and n_genes 0."""
    result = run(factory.write_no_genes(tmp_path / "nogenes.h5ad", fmt), tmp_path / "out")
    table = read_all(result)
    assert table.column("cell_sentence").to_pylist() == [""] * 4
    assert table.column("n_genes").to_pylist() == [0] * 4
    assert result.empty_sentences == 4


# -- obs columns ------------------------------------------------------------------------------
def test_obs_columns_kept_in_file_order_with_types(tmp_path: Path) -> None:
    """Every obs column in file order: categoricals as strings, numbers as numbers, bool as bool,
    missing as null (never "nan"), an all-NaN categorical as an all-null string column."""
    path = factory.write_obs_kinds(tmp_path / "kinds.h5ad")
    result = run(path, tmp_path / "out", chunk_size=3)
    table = read_all(result)
    assert table.column_names == ["cell_id", "dataset", *factory.KINDS_EXPECTED_7, "organism", "cell_sentence", "n_genes"]
    for name, values in factory.KINDS_EXPECTED_7.items():
        assert table.column(name).to_pylist() == values, name
    types = {f.name: f.type for f in table.schema}
    assert types["cat"] == types["cat_all_nan"] == types["cat_int"] == types["text"] == types["nullable_str"] == pa.string()
    assert (types["n_int"], types["n_int32"], types["f_nan"]) == (pa.int64(), pa.int32(), pa.float64())
    assert types["flag"] == types["nullable_bool"] == pa.bool_()
    assert types["nullable_int"] == pa.int64()
    assert table.column("cat_all_nan").null_count == 7
    for field in table.schema:
        if pa.types.is_string(field.type):
            assert "nan" not in [str(v).lower() for v in table.column(field.name).to_pylist()], field.name
    # every chunk file has the same schema
    assert len({pq.read_schema(p) for p in result.chunk_files}) == 1


@pytest.mark.parametrize("fmt", factory.MATRIX_FORMATS)
def test_zero_cells_give_one_readable_file_with_columns(tmp_path: Path, fmt: str) -> None:
    """A 0-cell input still yields chunk_0000.parquet with the full schema and no rows."""
    path = factory.write_zero_cells(tmp_path / "zero.h5ad", fmt)
    result = run(path, tmp_path / "out")
    assert [p.name for p in result.chunk_files] == ["chunk_0000.parquet"]
    table = pq.read_table(result.chunk_files[0])
    assert table.num_rows == 0
    assert result.n_cells == 0 and result.empty_sentences == 0
    kinds = [n for n in factory.KINDS_EXPECTED_7 if n != "nullable_str"]
    assert table.column_names == ["cell_id", "dataset", *kinds, "organism", "cell_sentence", "n_genes"]
    # same types as a non-empty conversion of the same kinds of columns
    full = read_all(run(factory.write_obs_kinds(tmp_path / "kinds.h5ad"), tmp_path / "full"))
    assert table.schema == full.drop_columns(["nullable_str"]).schema


def test_output_column_names_renames_clashes() -> None:
    """Names of our own output columns (and age, added later) become obs_<name>; a name that is
    already taken gets one more prefix."""
    assert output_column_names(["a", "cell_id", "dataset", "cell_sentence", "n_genes", "age"]) == {
        "a": "a",
        "cell_id": "obs_cell_id",
        "dataset": "obs_dataset",
        "cell_sentence": "obs_cell_sentence",
        "n_genes": "obs_n_genes",
        "age": "obs_age",
    }
    assert output_column_names(["cell_id", "obs_cell_id"]) == {"cell_id": "obs_obs_cell_id", "obs_cell_id": "obs_cell_id"}


def test_obs_clash_columns_kept_as_obs_prefixed(tmp_path: Path) -> None:
    """obs columns named cell_id/dataset/cell_sentence/n_genes/age keep their values as obs_<name>."""
    names = ("cell_id", "dataset", "cell_sentence", "n_genes", "age")
    path = factory.write_obs_clash(tmp_path / "clash.h5ad", names)
    table = read_all(run(path, tmp_path / "out"))
    assert table.column_names == ["cell_id", "dataset", *[f"obs_{n}" for n in names], "organism", "cell_sentence", "n_genes"]
    assert table.column("cell_id").to_pylist() == factory.CELL_IDS
    assert table.column("cell_sentence").to_pylist() == RANDOM_SENTENCES_DS
    for name in names:
        assert table.column(f"obs_{name}").to_pylist() == [f"{name}-{i}" for i in range(7)]


# -- errors -----------------------------------------------------------------------------------
@pytest.mark.parametrize("kind", ["negative", "nan", "inf"])
def test_bad_values_refused(tmp_path: Path, kind: str) -> None:
    """convert_h5ad passes the reader's refusal through, naming the file and the matrix."""
    path = factory.write_bad_values(tmp_path / "bad.h5ad", kind, "csr")
    with pytest.raises(InputError) as info:
        run(path, tmp_path / "out", chunk_size=100)
    assert str(path) in str(info.value) and "matrix X" in str(info.value)


def test_missing_matrix_refused(tmp_path: Path) -> None:
    with pytest.raises(InputError, match="no count matrix"):
        run(factory.write_without_x(tmp_path / "nox.h5ad"), tmp_path / "out")
    with pytest.raises(InputError, match="counts"):
        run(factory.write_counts(tmp_path / "x.h5ad"), tmp_path / "out2", matrix="counts")


def test_raw_x_override_to_scaled_x_refused(tmp_path: Path) -> None:
    """matrix='X' on a file whose X is scaled is refused even though raw.X is fine."""
    path = factory.write_with_raw(tmp_path / "raw.h5ad")
    with pytest.raises(InputError, match="matrix X has negative values"):
        run(path, tmp_path / "out", matrix="X")


# -- determinism ------------------------------------------------------------------------------
def test_two_runs_are_byte_identical(tmp_path: Path) -> None:
    """Same input and settings -> byte-identical parquet files."""
    path = factory.write_obs_kinds(tmp_path / "kinds.h5ad", "csc")
    first = run(path, tmp_path / "a" / "chunks", chunk_size=2)
    second = run(path, tmp_path / "b" / "chunks", chunk_size=2)
    assert len(first.chunk_files) == 4
    assert [p.read_bytes() for p in first.chunk_files] == [p.read_bytes() for p in second.chunk_files]


# -- the tie-break ------------------------------------------------------------------------------
def test_pinned_random_sentences_follow_the_specification() -> None:
    assert RANDOM_SENTENCES_DS == random_sentences("ds")
    assert RANDOM_SENTENCES_DS != factory.SENTENCES


@pytest.mark.parametrize("fmt", factory.MATRIX_FORMATS)
def test_position_tie_break_keeps_var_order(tmp_path: Path, fmt: str) -> None:
    """``tie_break="position"``: the order before the random tie-break existed (ties by var position)."""
    path = factory.write_counts(tmp_path / "in.h5ad", fmt)
    table = read_all(run(path, tmp_path / "out", tie_break="position"))
    assert table.column("cell_sentence").to_pylist() == factory.SENTENCES
    assert table.column("n_genes").to_pylist() == N_GENES


def test_var_order_does_not_change_random_sentences(tmp_path: Path) -> None:
    """The same cells with their genes (columns and var rows) in another order: the same random
    sentences; the position order changes with the var order."""
    perm = [3, 0, 4, 2, 1]
    plain = factory.write_counts(tmp_path / "plain.h5ad")
    permuted = factory.write_counts(tmp_path / "permuted.h5ad", matrix=factory.COUNTS[:, perm], var=factory.gene_var().iloc[perm])
    assert read_all(run(permuted, tmp_path / "p")).column("cell_sentence").to_pylist() == RANDOM_SENTENCES_DS
    assert read_all(run(plain, tmp_path / "a")).column("cell_sentence").to_pylist() == RANDOM_SENTENCES_DS
    assert read_all(run(permuted, tmp_path / "q", tie_break="position")).column("cell_sentence").to_pylist() != factory.SENTENCES


def test_seed_and_dataset_name_set_the_random_order(tmp_path: Path) -> None:
    """Another seed or dataset name: another pseudo-random order (the reference's, for that seed
    and name); the words and counts stay."""
    path = factory.write_counts(tmp_path / "in.h5ad")
    seed7 = read_all(run(path, tmp_path / "s7", seed=7)).column("cell_sentence").to_pylist()
    assert seed7 == [sentence_of(row, factory.TOKENS, 0, cell, "ds", seed=7) for row, cell in zip(factory.COUNTS, factory.CELL_IDS)]
    other = read_all(run(path, tmp_path / "other", dataset="other")).column("cell_sentence").to_pylist()
    assert other == random_sentences("other")
    assert seed7 != RANDOM_SENTENCES_DS and other != RANDOM_SENTENCES_DS
    for sentences in (seed7, other):
        assert [sorted(s.split()) for s in sentences] == [sorted(s.split()) for s in factory.SENTENCES]


def test_unknown_tie_break_refused(tmp_path: Path) -> None:
    with pytest.raises(ValueError, match="tie_break must be one of random, position, not 'var'"):
        run(factory.write_counts(tmp_path / "in.h5ad"), tmp_path / "out", tie_break="var")
    assert not (tmp_path / "out").exists()


# -- real files -------------------------------------------------------------------------------
def test_real_perturbseq(tmp_path: Path, shared_data: Path, hgnc: dict[str, str]) -> None:
    """Schema-7.1 Perturb-seq: cells, chunks, gene counts, sentences and obs values, pinned."""
    path = shared_data / "h5ad" / PERTURBSEQ
    result = convert_h5ad(path, "perturb", tmp_path / "out" / "chunks", hgnc, 128, 0, "zstd")
    assert (result.n_cells, result.n_vars, result.matrix, result.matrix_encoding) == (500, 2000, "X", "csr")
    assert [pq.read_metadata(p).num_rows for p in result.chunk_files] == [128, 128, 128, 116]
    # one id (ENSG00000283205) is not in HGNC and its feature_name is the id itself -> dropped
    assert result.gene_counts == gene_counts(2000, 1999, 0, 1, 0)
    assert result.empty_sentences == 0
    table = read_all(result)
    first = table.slice(0, 1).to_pylist()[0]
    assert first["cell_id"] == "TGAGCTTGTAAGTCGAAGTGAGTG-1"
    assert first["cell_sentence"].split(" ")[:5] == ["IL2RA", "TMSB10", "TRAC", "S100A4", "GBP2"]
    assert first["n_genes"] == 458

    adata = read_adata(path)
    assert adata.var.loc["ENSG00000283205", "feature_name"] == "ENSG00000283205"
    tokens = [hgnc.get(g) for g in adata.var_names]
    assert sum(t is None for t in tokens) == 1
    assert table.column("cell_id").to_pylist() == list(adata.obs_names)
    for row in (0, 1, 127, 128, 300, 499):
        values = adata.X[row].toarray().ravel()
        expected = sentence_of(values, tokens, cell=adata.obs_names[row], dataset="perturb")
        assert table.column("cell_sentence")[row].as_py() == expected, row
        assert table.column("n_genes")[row].as_py() == len(expected.split(" ")), row

    # schema 7 keeps the organism in uns: it becomes a column of every cell
    assert table.column_names == ["cell_id", "dataset", *adata.obs.columns, "organism", "cell_sentence", "n_genes"]
    assert set(table.column("organism").to_pylist()) == {"Homo sapiens"}
    assert (result.matrix, result.value_dtype, result.integer_values) == ("X", "float32", True)
    assert result.source_facts["schema_version"] == "7.1.0" and result.source_facts["organism"] == "Homo sapiens"
    assert set(table.column("donor_id").to_pylist()) == {"CE0008678"}
    assert set(table.column("development_stage").to_pylist()) == {"23-year-old stage"}
    assert set(table.column("development_stage_ontology_term_id").to_pylist()) == {"HsapDv:0000117"}
    assert table.schema.field("is_primary_data").type == pa.bool_()
    assert table.schema.field("median_genes_per_cell_sample").type == pa.int64()
    assert table.schema.field("n_genes_by_counts").type == pa.int32()
    assert table.schema.field("total_counts").type == pa.float32()
    for name in adata.obs.columns:  # every obs value equals anndata's, missing as null
        column = adata.obs[name]
        if column.dtype == "category":
            expected_values = [None if v != v else str(v) for v in column.astype(object)]
        else:
            expected_values = [None if (isinstance(v, float) and v != v) else v for v in column.tolist()]
        got = table.column(name).to_pylist()
        if pa.types.is_floating(table.schema.field(name).type):
            np.testing.assert_allclose(np.array(got, dtype=float), np.array(expected_values, dtype=float), rtol=1e-6, err_msg=name)
        else:
            assert got == expected_values, name


def test_real_perturbseq_deterministic(tmp_path: Path, shared_data: Path, hgnc: dict[str, str]) -> None:
    """Two conversions of the real file are byte-identical."""
    path = shared_data / "h5ad" / PERTURBSEQ
    runs = [convert_h5ad(path, "p", tmp_path / k / "chunks", hgnc, 200, 0, "zstd") for k in ("a", "b")]
    assert [p.read_bytes() for p in runs[0].chunk_files] == [p.read_bytes() for p in runs[1].chunk_files]


def test_real_heart_unlabeled_uses_raw(tmp_path: Path, shared_data: Path, hgnc: dict[str, str]) -> None:
    """Unlabeled heart file: raw.X is read; the ERCC spike-in (no counts) never reaches a sentence;
    the one Ensembl id HGNC lacks is dropped."""
    path = shared_data / "h5ad" / HEART
    result = convert_h5ad(path, "heart", tmp_path / "out", hgnc, 128, 0, "zstd")
    assert (result.n_cells, result.n_vars, result.matrix, len(result.chunk_files)) == (320, 136, "raw.X", 3)
    assert result.gene_counts == gene_counts(136, 134, 1, 1, 0)
    assert result.empty_sentences == 0
    table = read_all(result)
    assert not any("ERCC" in s for s in table.column("cell_sentence").to_pylist())
    adata = read_adata(path)
    assert "development_stage" not in table.column_names
    assert set(table.column("development_stage_ontology_term_id").to_pylist()) == {"HsapDv:0000003"}
    assert sorted(set(table.column("donor_id").to_pylist())) == ["donor_1", "donor_2"]
    raw = adata.raw.X.toarray()
    tokens = [hgnc.get(g, g if not g.startswith("ENSG") else None) for g in adata.raw.var_names]
    assert tokens[0] == "ERCC-00002" and tokens.count(None) == 1
    assert table.column("cell_sentence").to_pylist() == [
        sentence_of(row, tokens, cell=cell, dataset="heart") for row, cell in zip(raw, adata.obs_names)
    ]


def test_real_tiny_raw_stored_zero(tmp_path: Path, shared_data: Path, hgnc: dict[str, str]) -> None:
    """tiny2x7: raw.X's stored zero means MACF1 is missing from the first cell's sentence."""
    result = convert_h5ad(shared_data / "h5ad" / TINY, "tiny", tmp_path / "out", hgnc, 10, 0, "zstd")
    table = read_all(result)
    assert result.matrix == "raw.X"
    assert table.column("cell_id").to_pylist() == ["X", "Y"]
    assert table.column("cell_sentence").to_pylist() == [
        "DPM1 TNMD BAD BRCA2 BRCA1 TP53",
        "DPM1 TNMD BAD BRCA2 BRCA1 TP53 MACF1",
    ]
    assert table.column("n_genes").to_pylist() == [6, 7]


def test_real_tenx_multiome(tmp_path: Path, shared_data: Path, hgnc: dict[str, str]) -> None:
    """10x var (symbols + gene_ids), no obs columns: only our four columns; 94 empty cells."""
    path = shared_data / "h5ad" / TENX
    result = convert_h5ad(path, "tenx", tmp_path / "out", hgnc, 64, 0, "zstd")
    assert result.gene_counts == gene_counts(100, 74, 26, 0, 0)
    assert result.empty_sentences == 94
    table = read_all(result)
    assert table.column_names == ["cell_id", "dataset", "organism", "cell_sentence", "n_genes"]
    assert [pq.read_metadata(p).num_rows for p in result.chunk_files] == [64, 36]
    adata = read_adata(path)
    tokens = [hgnc.get(i, s) for s, i in zip(adata.var_names, adata.var["gene_ids"])]
    dense = adata.X.toarray()
    assert table.column("cell_sentence").to_pylist() == [sentence_of(row, tokens, cell=cell, dataset="tenx") for row, cell in zip(dense, adata.obs_names)]
    assert table.column("n_genes").to_pylist() == [int(np.count_nonzero(row)) for row in dense]


def test_real_dense_with_raw_uses_230_raw_genes(tmp_path: Path, shared_data: Path, hgnc: dict[str, str]) -> None:
    """pbmc_small dense X (scaled) with raw: raw.X and its 230-gene var are used."""
    path = shared_data / "h5ad" / "tiledbsoma_pbmc_small_dense_with_raw.h5ad"
    result = convert_h5ad(path, "pbmc", tmp_path / "out", hgnc, 50, 0, "zstd")
    assert (result.matrix, result.matrix_encoding, result.n_vars, result.n_cells) == ("raw.X", "csr", 230, 80)
    assert result.gene_counts == gene_counts(230, 0, 230, 0, 0)
    adata = read_adata(path)
    tokens = list(adata.raw.var_names)
    table = read_all(result)
    assert table.column("cell_sentence").to_pylist() == [
        sentence_of(row, tokens, cell=cell, dataset="pbmc") for row, cell in zip(adata.raw.X.toarray(), adata.obs_names)
    ]
    assert table.column("groups").to_pylist() == [str(v) for v in adata.obs["groups"]]


@pytest.mark.parametrize(
    ("name", "problem"),
    [
        ("tiledbsoma_pbmc3k_processed_no_X.h5ad", "no count matrix"),
        ("tiledbsoma_pbmc_small_x_csc.h5ad", "matrix X has negative values"),
        ("tiledbsoma_pbmc_small_categorical_all_nan.h5ad", "matrix X has negative values"),
    ],
)
def test_real_refused_files(tmp_path: Path, shared_data: Path, name: str, problem: str) -> None:
    """No X, or scaled X with no raw: InputError naming the file."""
    path = shared_data / "h5ad" / name
    with pytest.raises(InputError) as info:
        convert_h5ad(path, "x", tmp_path / "out", {}, 32, 0, "zstd")
    assert str(info.value).startswith(f"{path}: ")
    assert problem in str(info.value)


def test_organism_column_from_obs_term_ids_or_kept_as_is(tmp_path: Path) -> None:
    """Without an ``organism`` column the label of ``organism_ontology_term_id`` fills it; an
    existing ``organism`` column is the one (not renamed)."""
    import anndata
    import pandas as pd

    obs = pd.DataFrame({"organism_ontology_term_id": pd.Categorical(["NCBITaxon:9606", "NCBITaxon:10090", "NCBITaxon:9606"])}, index=["a", "b", "c"])
    var = pd.DataFrame(index=["G1", "G2"])
    counts = np.array([[1, 2], [3, 0], [0, 1]], dtype=np.float32)
    anndata.AnnData(X=counts, obs=obs, var=var).write_h5ad(tmp_path / "ids.h5ad")
    table = read_all(run(tmp_path / "ids.h5ad", tmp_path / "out_ids"))
    assert table.column("organism").to_pylist() == ["Homo sapiens", "Mus musculus", "Homo sapiens"]
    obs["organism"] = ["human (as typed)"] * 3
    anndata.AnnData(X=counts, obs=obs, var=var).write_h5ad(tmp_path / "own.h5ad")
    table = read_all(run(tmp_path / "own.h5ad", tmp_path / "out_own"))
    assert table.column("organism").to_pylist() == ["human (as typed)"] * 3
    assert "obs_organism" not in table.column_names


def test_organism_labels_are_the_ontology_s() -> None:
    """The organism table agrees with the NCBITaxon release cellxgene-ontology-guide ships (loading
    it takes ~14 s and ~3 GB, which is why conversion uses the table)."""
    from cellxgene_ontology_guide.ontology_parser import OntologyParser

    from scrna_assets.core.convert import ORGANISM_LABELS

    parser = OntologyParser()
    assert {term: parser.get_term_label(term) for term in ORGANISM_LABELS} == ORGANISM_LABELS


# -- progress callback ---------------------------------------------------------------------------


@pytest.mark.parametrize("fmt", factory.MATRIX_FORMATS)
def test_progress_is_called_once_per_chunk_and_changes_no_byte(tmp_path: Path, fmt: str) -> None:
    """23 cells in chunks of 5: (0, 23) once the file is open (a batch learns the size from it),
    then (5, 23), (10, 23), ..., (23, 23); the last call comes once every file is on disk, and the files are byte-identical to a run without the callback."""
    path = factory.write_random(tmp_path / "r.h5ad", fmt, n_obs=23)
    calls: list[tuple[int, int]] = []
    on_disk: list[int] = []

    def progress(done: int, total: int) -> None:
        calls.append((done, total))
        on_disk.append(len(list((tmp_path / "with").glob("chunk_*.parquet"))))

    with_progress = run(path, tmp_path / "with", chunk_size=5, progress=progress)
    without = run(path, tmp_path / "without", chunk_size=5)
    assert calls == [(0, 23), (5, 23), (10, 23), (15, 23), (20, 23), (23, 23)]
    assert on_disk[0] == 0 and on_disk[-1] == 5
    assert [p.name for p in with_progress.chunk_files] == [p.name for p in without.chunk_files]
    for a, b in zip(with_progress.chunk_files, without.chunk_files):
        assert a.read_bytes() == b.read_bytes()


def test_progress_of_an_exact_multiple_and_of_zero_cells(tmp_path: Path) -> None:
    """7 cells in chunks of 7: the start and the end; a 0-cell input: one call, (0, 0)."""
    calls: list[tuple[int, int]] = []
    run(factory.write_counts(tmp_path / "c.h5ad"), tmp_path / "out", chunk_size=7, progress=lambda d, t: calls.append((d, t)))
    assert calls == [(0, 7), (7, 7)]
    calls.clear()
    run(factory.write_zero_cells(tmp_path / "zero.h5ad"), tmp_path / "zero", progress=lambda d, t: calls.append((d, t)))
    assert calls == [(0, 0)]
