"""Tests for ``scrna_assets.core.ages``: development stage -> donor age and its bounds in years."""

from __future__ import annotations

import csv
import math
from collections import Counter
from pathlib import Path

import pytest

from scrna_assets.core import ages
from scrna_assets.core.ages import KINDS, StageAge, parse_age_years, parse_stage_text, resolve_stage, stage_age, term_label

DAYS = 365.25
# The expected value of every ontology term: drafted by a throwaway script written apart from
# the module, then every row read and corrected by hand (see the file's header). It is the spec,
# not a copy of the code's output.
EXPECTED_TABLE = Path(__file__).with_name("stage_ages_expected.csv")
TERMS_CSV = ("ontology", "development_stage_terms_hsapdv_mmusdv.csv")
_UNIT_YEARS = {"mo": (1.0, 12.0), "w": (7.0, DAYS), "d": (1.0, DAYS)}
# What the label text alone gives for a term whose values come from a synonym or replaced_by.
LABEL_ONLY = {
    "no_age": StageAge(None, None, None, "no_age"),
    "prenatal": StageAge(None, None, None, "prenatal"),
    "newborn": StageAge(0.0, 0.0, None, "newborn"),
}


def years(cell: str) -> float | None:
    """A table cell: ``''`` -> None, ``23`` -> 23.0, ``3mo`` -> 3/12, ``2w`` -> 14/365.25, ``28d`` -> 28/365.25."""
    if not cell:
        return None
    for suffix, (numerator, denominator) in _UNIT_YEARS.items():
        if cell.endswith(suffix):
            return float(cell[: -len(suffix)]) * numerator / denominator
    return float(cell)


def expected(row: dict[str, str]) -> StageAge:
    return StageAge(years(row["age"]), years(row["age_min"]), years(row["age_max"]), row["kind"])


def same(got: StageAge, want: StageAge) -> bool:
    """Same kind, same nulls, and values equal to 1e-12 relative."""
    if got.kind != want.kind:
        return False
    for g, w in ((got.age, want.age), (got.age_min, want.age_min), (got.age_max, want.age_max)):
        if (g is None) != (w is None) or (w is not None and not (isinstance(g, float) and math.isclose(g, w, rel_tol=1e-12, abs_tol=0.0))):
            return False
    return True


@pytest.fixture(scope="module")
def expected_rows() -> list[dict[str, str]]:
    with EXPECTED_TABLE.open(newline="", encoding="utf-8") as handle:
        return list(csv.DictReader(line for line in handle if not line.startswith("#")))


@pytest.fixture
def stage_terms(shared_data: Path) -> list[dict[str, str]]:
    with shared_data.joinpath(*TERMS_CSV).open(newline="", encoding="utf-8") as handle:
        return list(csv.DictReader(handle))


def test_table_covers_exactly_the_ontology_terms(expected_rows: list[dict[str, str]], stage_terms: list[dict[str, str]]) -> None:
    """The table pins each of the 438 HsapDv/MmusDv terms once, with the ontology's label."""
    assert len(stage_terms) == 438
    assert [r["term_id"] for r in expected_rows] == [r["term_id"] for r in stage_terms]
    assert [r["label"] for r in expected_rows] == [r["label"] for r in stage_terms]
    assert {r["kind"] for r in expected_rows} <= set(KINDS)
    replaced = {r["term_id"] for r in stage_terms if r["replaced_by"]}
    assert replaced == {r["term_id"] for r in expected_rows if r["via"] == "replaced_by"} == {"HsapDv:0000004", "MmusDv:0000040"}


def test_every_term_id_gives_the_table_value(expected_rows: list[dict[str, str]]) -> None:
    """By term id: canonical label, synonyms for labels without numbers, replaced_by for
    deprecated terms; no free-text label at all."""
    mismatches = [
        (row["term_id"], row["label"], got, want)
        for row in expected_rows
        if not same(got := stage_age(None, row["term_id"]), want := expected(row))
    ]
    assert mismatches == []


def test_every_label_text_gives_the_table_value(expected_rows: list[dict[str, str]]) -> None:
    """By label text alone: the table value, except where a synonym or replaced_by gave it."""
    mismatches = []
    for row in expected_rows:
        want = expected(row) if row["via"] == "label" else LABEL_ONLY[row["label_only"]]
        for got in (stage_age(row["label"]), stage_age(row["label"], "")):
            if not same(got, want):
                mismatches.append((row["term_id"], row["label"], got, want))
    assert mismatches == []


def test_kind_counts(expected_rows: list[dict[str, str]]) -> None:
    """How many terms fall in each class, so a table edit that moves many rows stands out."""
    by_kind = Counter(row["kind"] for row in expected_rows)
    assert by_kind == Counter({"point": 241, "prenatal": 119, "range": 36, "no_age": 31, "censored": 8, "newborn": 3})
    assert Counter(row["via"] for row in expected_rows) == Counter({"label": 421, "synonym": 15, "replaced_by": 2})
    points = [row for row in expected_rows if row["kind"] == "point"]
    assert Counter(row["term_id"][:6] for row in points) == Counter({"HsapDv": 138, "MmusDv": 103})


@pytest.mark.parametrize(
    ("label", "want"),
    [
        ("23-year-old stage", StageAge(23.0, 23.0, 24.0, "point")),
        ("3-month-old stage", StageAge(0.25, 0.25, 4 / 12, "point")),
        ("15-19 year-old stage", StageAge(None, 15.0, 20.0, "range")),
        ("15-19 year-old", StageAge(None, 15.0, 20.0, "range")),
        ("sixth decade stage", StageAge(None, 50.0, 60.0, "range")),
        ("nursing stage (0-11 months)", StageAge(None, 0.0, 1.0, "range")),
        ("80 year-old and over stage", StageAge(None, 80.0, None, "censored")),
        ("centenarian stage", StageAge(None, 100.0, None, "censored")),
        ("newborn stage (0-28 days)", StageAge(0.0, 0.0, 28 / DAYS, "newborn")),
        ("newborn stage", StageAge(0.0, 0.0, None, "newborn")),
        ("Theiler stage 27", StageAge(0.0, 0.0, None, "newborn")),
        ("Carnegie stage 23", StageAge(None, None, None, "prenatal")),
        ("Theiler stage 26", StageAge(None, None, None, "prenatal")),
        ("Theiler stage 11b", StageAge(None, None, None, "prenatal")),
        ("9th week post-fertilization stage", StageAge(None, None, None, "prenatal")),
        ("embryonic day 14.5", StageAge(None, None, None, "prenatal")),
        ("E14.5", StageAge(None, None, None, "prenatal")),
        ("Theiler stage 28", StageAge(None, None, None, "no_age")),
        ("late adult stage", StageAge(None, None, None, "no_age")),
    ],
)
def test_issue_examples_exactly(label: str, want: StageAge) -> None:
    """The issue's examples, compared with ``==`` (3/12 and 28/365.25 as written)."""
    assert stage_age(label) == want


@pytest.mark.parametrize(
    ("label", "want"),
    [
        ("45-year-old human stage", StageAge(45.0, 45.0, 46.0, "point")),  # older CELLxGENE form
        ("6 month-old stage", StageAge(0.5, 0.5, 7 / 12, "point")),
        ("10 weeks", StageAge(70 / DAYS, 70 / DAYS, 77 / DAYS, "point")),
        ("1 week", StageAge(7 / DAYS, 7 / DAYS, 14 / DAYS, "point")),
        ("13-day-old stage", StageAge(13 / DAYS, 13 / DAYS, 14 / DAYS, "point")),
        (" 23-Year-Old  Stage ", StageAge(23.0, 23.0, 24.0, "point")),
        ("1-7 days", StageAge(None, 1 / DAYS, 8 / DAYS, "range")),
        ("3-6 month-old mature stage", StageAge(None, 3 / 12, 7 / 12, "range")),
        ("child stage (1-4 yo)", StageAge(None, 1.0, 5.0, "range")),
        ("under-1-year-old stage", StageAge(None, 0.0, 1.0, "range")),
        ("20-month-old stage and over", StageAge(None, 20 / 12, None, "censored")),
        ("60+ years", StageAge(None, 60.0, None, "censored")),
        ("149-year-old stage", StageAge(149.0, 149.0, 150.0, "point")),
    ],
)
def test_other_label_forms(label: str, want: StageAge) -> None:
    assert stage_age(label) == want


@pytest.mark.parametrize(
    "label",
    ["999999999999999999999-year-old stage", "150-year-old stage", "140-160 year-old stage", "200+ years", "1" * 400 + " years"],
)
def test_ages_outside_0_150_are_null(label: str) -> None:
    """1e21 (or infinite) years is a typo, not a donor: no age, no bounds, kind out_of_range."""
    assert stage_age(label) == StageAge(None, None, None, "out_of_range")
    assert parse_age_years(label) is None


@pytest.mark.parametrize(
    ("label", "kind"),
    [(None, "missing"), ("", "missing"), ("   ", "missing"), (23, "not_text"), (23.0, "not_text"), (float("nan"), "not_text"),
     ("unknown", "no_age"), ("na", "no_age"), ("adult stage", "no_age"), ("19-15 year-old", "no_age")],
)
def test_missing_numeric_and_unknown_labels(label: object, kind: str) -> None:
    """None, blank, numbers (a numeric obs column) and words without a stated span give nothing."""
    assert stage_age(label) == StageAge(None, None, None, kind)
    assert parse_age_years(label) is None  # type: ignore[arg-type]


def test_term_id_first_then_label() -> None:
    """The id wins when it gives something; an absent, unknown or uninformative id falls back to
    the free text; resolve_stage names the label text the values came from."""
    assert resolve_stage("adult stage", "HsapDv:0000117") == (StageAge(23.0, 23.0, 24.0, "point"), "23-year-old stage")
    assert resolve_stage("45-year-old stage", "HsapDv:9999999") == (StageAge(45.0, 45.0, 46.0, "point"), "45-year-old stage")
    assert resolve_stage("45-year-old stage", "not-a-term")[0].age == 45.0
    assert resolve_stage("45-year-old stage", "unknown")[0].age == 45.0
    assert resolve_stage("45-year-old stage", " ")[0].age == 45.0
    assert resolve_stage("45-year-old stage", 7)[0].age == 45.0
    assert resolve_stage("unknown", "HsapDv:0000258") == (StageAge(None, None, None, "no_age"), "adult stage")
    assert resolve_stage(None, "HsapDv:0000227") == (StageAge(None, 60.0, None, "censored"), "late adult stage")
    assert resolve_stage(5, None) == (StageAge(None, None, None, "not_text"), None)
    assert resolve_stage(None, "HsapDv:9999999") == (StageAge(None, None, None, "missing"), None)


def test_synonym_spans() -> None:
    """Labels without numbers take the span a synonym states; the newborn its stated period."""
    assert stage_age(None, "HsapDv:0000082") == StageAge(0.0, 0.0, 1 / 12, "newborn")  # newborn, "0-1 month"
    assert stage_age(None, "HsapDv:0000093") == StageAge(None, 65.0, None, "censored")  # aged, "65+ years"
    assert stage_age(None, "HsapDv:0000083") == StageAge(None, 1 / 12, 2.0, "range")  # infant, "1-23 months"
    assert stage_age(None, "MmusDv:0000038") == StageAge(None, 7 / DAYS, 42 / DAYS, "range")  # infant, "1-5 weeks"
    assert stage_age(None, "MmusDv:0000036") == StageAge(0.0, 0.0, None, "newborn")  # TS27, "newborn stage"
    assert stage_age(None, "HsapDv:0000258") == StageAge(None, None, None, "no_age")  # adult, "mature stage"


class FakeParser:
    """An ontology with a deprecated term replaced by a chain ending at a 23-year-old stage."""

    TERMS = {
        "X:1": ("old point", [], "X:2"),
        "X:2": ("middle", [], "X:3"),
        "X:3": ("23-year-old stage", [], None),
        "X:4": ("loop", [], "X:5"),
        "X:5": ("grown-up stage", ["30+ years"], "X:4"),
    }

    def get_term_replacement(self, term_id: str) -> str | None:
        return self._term(term_id)[2]

    def get_term_label(self, term_id: str) -> str:
        return self._term(term_id)[0]

    def get_term_synonyms(self, term_id: str) -> list[str]:
        return list(self._term(term_id)[1])

    def _term(self, term_id: str) -> tuple[str, list[str], str | None]:
        if not term_id.startswith("X:"):
            raise ValueError(term_id)
        return self.TERMS[term_id]


@pytest.fixture
def fake_ontology(monkeypatch: pytest.MonkeyPatch):
    ages.clear_caches()
    monkeypatch.setattr(ages, "ontology_parser", FakeParser)
    yield
    monkeypatch.undo()
    ages.clear_caches()


def test_replaced_by_is_followed(fake_ontology: None) -> None:
    """Deprecated ids take their replacement's label (chains followed; a loop stops)."""
    assert resolve_stage(None, "X:1") == (StageAge(23.0, 23.0, 24.0, "point"), "23-year-old stage")
    assert resolve_stage(None, "X:4") == (StageAge(None, 30.0, None, "censored"), "grown-up stage")
    assert resolve_stage("2-year-old stage", "X:9")[0].age == 2.0  # unknown id: KeyError -> text


def test_real_replaced_by_term() -> None:
    """HsapDv:0000004 cleavage stage -> Carnegie stage 02; MmusDv:0000040 adult -> mature stage."""
    assert resolve_stage(None, "HsapDv:0000004") == (StageAge(None, None, None, "prenatal"), "Carnegie stage 02")
    assert resolve_stage(None, "MmusDv:0000040") == (StageAge(None, None, None, "no_age"), "mature stage")


def test_parse_stage_text_ignores_ontology() -> None:
    """The text route never consults synonyms: ``late adult stage`` is HsapDv 60+ but MmusDv has no span."""
    assert parse_stage_text("late adult stage") == StageAge(None, None, None, "no_age")
    assert parse_age_years("newborn stage (0-28 days)") == 0.0
    assert parse_age_years("23-year-old stage") == 23.0


def test_stage_label_from_ontology() -> None:
    """The offline ontology turns term ids into labels; unknown or empty ids give None."""
    assert term_label("HsapDv:0000117") == "23-year-old stage"
    assert term_label("HsapDv:9999999") is None
    assert term_label("not-a-term") is None
    assert term_label("") is None
    assert term_label(None) is None
