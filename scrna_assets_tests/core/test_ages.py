"""Tests for ``scrna_assets.core.ages``: development-stage label -> donor age in years."""

from __future__ import annotations

import csv
import math
import re
from collections import Counter
from collections.abc import Callable
from pathlib import Path

import pytest

from scrna_assets.core.ages import parse_age_years, stage_label

DAYS = 365.25

# The data contract, written independently of the module: (name, full-match regex, N -> years).
EXPECTED_RULES: list[tuple[str, re.Pattern[str], Callable[[int], float]]] = [
    ("year", re.compile(r"(\d+)-year-old stage"), lambda n: float(n)),
    ("year", re.compile(r"(\d+)-year-old human stage"), lambda n: float(n)),
    ("month", re.compile(r"(\d+)-month-old stage"), lambda n: n / 12),
    ("month", re.compile(r"(\d+) month-old stage"), lambda n: n / 12),
    ("week", re.compile(r"(\d+)-week-old stage"), lambda n: n * 7 / DAYS),
    ("week", re.compile(r"(\d+) weeks"), lambda n: n * 7 / DAYS),
    ("week", re.compile(r"(1) week"), lambda n: n * 7 / DAYS),
    ("day", re.compile(r"(\d+)-day-old stage"), lambda n: n / DAYS),
    ("newborn", re.compile(r"newborn stage()"), lambda n: 0.0),
    ("newborn", re.compile(r"newborn stage \(0-28 days\)()"), lambda n: 0.0),
]


def expected_age(label: str | None) -> tuple[str | None, float | None]:
    """(rule name, age) by the contract's table, or (None, None) for everything else."""
    if label is None:
        return None, None
    for name, pattern, to_years in EXPECTED_RULES:
        match = pattern.fullmatch(label)
        if match:
            return name, to_years(int(match.group(1)) if match.group(1) else 0)
    return None, None


def same_age(got: float | None, want: float | None) -> bool:
    if want is None or got is None:
        return got is None and want is None
    return isinstance(got, float) and math.isclose(got, want, rel_tol=1e-12, abs_tol=0.0)


@pytest.fixture
def stage_terms(shared_data: Path) -> list[dict[str, str]]:
    path = shared_data / "ontology" / "development_stage_terms_hsapdv_mmusdv.csv"
    with path.open(newline="", encoding="utf-8") as handle:
        return list(csv.DictReader(handle))


def test_every_ontology_label_parses_as_the_contract_says(stage_terms: list[dict[str, str]]) -> None:
    """Every HsapDv/MmusDv label must get exactly the contract's age (or None)."""
    assert len(stage_terms) == 438
    mismatches = []
    for row in stage_terms:
        _, want = expected_age(row["label"])
        got = parse_age_years(row["label"])
        if not same_age(got, want):
            mismatches.append((row["term_id"], row["label"], got, want))
    assert mismatches == []


def test_ontology_label_counts(stage_terms: list[dict[str, str]]) -> None:
    """Pin how many labels give a number, per unit, so a regex change that widens or narrows
    what parses is caught even if the expected-value table were changed in step."""
    by_rule = Counter(expected_age(row["label"])[0] for row in stage_terms)
    assert by_rule == Counter({None: 195, "year": 114, "month": 53, "week": 57, "day": 17, "newborn": 2})
    parsed = [row for row in stage_terms if parse_age_years(row["label"]) is not None]
    assert len(parsed) == 243
    assert sum(1 for row in parsed if row["term_id"].startswith("HsapDv:")) == 140
    assert sum(1 for row in parsed if row["term_id"].startswith("MmusDv:")) == 103


def test_ontology_spot_values(stage_terms: list[dict[str, str]]) -> None:
    """A few term ids whose age we know by heart."""
    by_id = {row["term_id"]: row["label"] for row in stage_terms}
    assert parse_age_years(by_id["HsapDv:0000117"]) == 23.0
    assert parse_age_years(by_id["HsapDv:0000246"]) == 1.0  # 1-year-old stage
    assert parse_age_years(by_id["HsapDv:0000255"]) == 114.0
    assert parse_age_years(by_id["HsapDv:0000262"]) == 0.0  # newborn stage (0-28 days)
    assert parse_age_years(by_id["HsapDv:0000082"]) == 0.0  # newborn stage (deprecated)
    assert parse_age_years(by_id["HsapDv:0000273"]) == pytest.approx(1 / 12, rel=1e-12)
    assert parse_age_years(by_id["MmusDv:0000045"]) == pytest.approx(7 / DAYS, rel=1e-12)  # 1 week
    assert parse_age_years(by_id["MmusDv:0000102"]) == pytest.approx(29 * 7 / DAYS, rel=1e-12)  # 29 weeks
    assert parse_age_years(by_id["MmusDv:0000176"]) == pytest.approx(2.5, rel=1e-12)  # 30-month-old
    assert parse_age_years(by_id["MmusDv:0000148"]) == pytest.approx(27 / DAYS, rel=1e-12)
    for term_id in ("HsapDv:0000090", "HsapDv:0000095", "HsapDv:0000268", "HsapDv:0000274",
                    "MmusDv:0000091", "MmusDv:0000044", "MmusDv:0000137", "HsapDv:0000256",
                    "HsapDv:0000046", "MmusDv:0000041", "HsapDv:0000237"):
        assert parse_age_years(by_id[term_id]) is None, by_id[term_id]


@pytest.mark.parametrize(
    ("label", "years"),
    [
        ("23-year-old stage", 23.0),
        ("45-year-old human stage", 45.0),
        ("6-month-old stage", 0.5),
        ("6 month-old stage", 0.5),
        ("18-month-old stage", 1.5),
        ("4-week-old stage", 28 / DAYS),
        ("10 weeks", 70 / DAYS),
        ("1 week", 7 / DAYS),
        ("13-day-old stage", 13 / DAYS),
        ("newborn stage", 0.0),
        ("newborn stage (0-28 days)", 0.0),
    ],
)
def test_point_ages(label: str, years: float) -> None:
    """Each point-in-time label form from the contract gives its exact age as a float."""
    got = parse_age_years(label)
    assert isinstance(got, float)
    assert got == pytest.approx(years, rel=1e-12, abs=0.0)


@pytest.mark.parametrize(
    "label",
    [
        "25-44 year-old stage",
        "2-5 year-old child stage",
        "15-19 year-old",
        "third decade stage",
        "80 year-old and over stage",
        "20-month-old stage and over",
        "38th week post-fertilization and over stage",
        "9th week post-fertilization stage",
        "Carnegie stage 23",
        "Theiler stage 11b",
        "embryonic stage",
        "fetal stage",
        "prenatal stage",
        "adult stage",
        "aged stage",
        "child stage",
        "child stage (1-4 yo)",
        "nursing stage (0-11 months)",
        "under-1-year-old stage",
        "1-7 days",
        "3-6 month-old mature stage",
        "unknown",
        "na",
        "",
        None,
    ],
)
def test_non_point_labels_give_none(label: str | None) -> None:
    """Ranges, open-ended, prenatal, broad and missing stages must not become a made-up age."""
    assert parse_age_years(label) is None


def test_stage_label_from_ontology() -> None:
    """The offline ontology turns term ids into labels; unknown or empty ids give None."""
    assert stage_label("HsapDv:0000117") == "23-year-old stage"
    assert stage_label("HsapDv:9999999") is None
    assert stage_label("not-a-term") is None
    assert stage_label("") is None
    assert stage_label(None) is None
