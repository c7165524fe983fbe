"""Donor age in years from CellxGene development stages (HsapDv / MmusDv): a point ``age`` and the
span ``[age_min, age_max)`` the stage covers.

``age`` is set only for a stage that names one point in time (``23-year-old stage``, a newborn):
ranges, decades and open-ended stages leave it null, because a made-up midpoint would be a wrong
training label. What such a stage does say goes into the bounds instead: ``15-19 year-old stage``
covers [15, 20), ``80 year-old and over stage`` [80, null). A point covers its unit
(``23-year-old stage``: [23, 24)). Prenatal stages give no age and no bounds (these are ages of
born donors); broad stages without numbers give bounds only where the ontology states a span
(a synonym such as ``60+ years``).

The term id is read first (its canonical label in the ontology that cellxgene-ontology-guide
ships, deprecated terms via ``replaced_by``, then its synonyms), the free-text label second: the
id is what the CELLxGENE schema validates, the text is what a curator typed.
"""

from __future__ import annotations

import re
from dataclasses import dataclass
from functools import lru_cache

DAYS_PER_YEAR = 365.25
MIN_AGE_YEARS, MAX_AGE_YEARS = 0.0, 150.0  # plausible donor ages: [0, 150)

POINT, RANGE, CENSORED, NEWBORN = "point", "range", "censored", "newborn"
PRENATAL, NO_AGE, MISSING, OUT_OF_RANGE, NOT_TEXT = "prenatal", "no_age", "missing", "out_of_range", "not_text"
KINDS = (POINT, RANGE, CENSORED, NEWBORN, PRENATAL, NO_AGE, MISSING, OUT_OF_RANGE, NOT_TEXT)

# years = n * numerator / denominator: multiplying first gives 3 months = 0.25 and 28 days =
# 28/365.25 exactly, as written.
_UNITS = {
    "year": (1.0, 1.0), "yr": (1.0, 1.0), "yo": (1.0, 1.0),
    "month": (1.0, 12.0), "week": (7.0, DAYS_PER_YEAR), "day": (1.0, DAYS_PER_YEAR),
}
_ORDINALS = ("first", "second", "third", "fourth", "fifth", "sixth", "seventh", "eighth", "ninth", "tenth",
             "eleventh", "twelfth", "thirteenth", "fourteenth", "fifteenth")

_NUM = r"\d+(?:\.\d+)?"
_UNIT = r"(?P<unit>year|yr|yo|month|week|day)s?(?:[- ]old)?"
_TAIL = r"(?: (?:human|child|mature))?(?: stage)?"
_POINT = re.compile(rf"^(?P<n>{_NUM})[- ]{_UNIT}{_TAIL}$")  # 23-year-old stage, 10 weeks
_RANGE = re.compile(rf"^(?P<a>{_NUM}) ?(?:-|to) ?(?P<b>{_NUM})[- ]{_UNIT}{_TAIL}$")  # 15-19 year-old
_UNDER = re.compile(rf"^under[- ](?P<n>{_NUM})[- ]{_UNIT}{_TAIL}$")  # under-1-year-old stage
_PLUS = re.compile(rf"^(?P<n>{_NUM})\+ ?{_UNIT}{_TAIL}$")  # 60+ years
_AND_OVER = re.compile(rf"^(?P<n>{_NUM})[- ]{_UNIT}(?: stage)? and (?:over|older)(?: stage)?$")
_DECADE = re.compile(rf"^(?P<k>{'|'.join(_ORDINALS)}|\d+(?:st|nd|rd|th)) decade(?: stage)?$")
_CENTENARIAN = re.compile(r"^centenarian(?: stage)?$")
_NEWBORN = re.compile(r"^(?:newborn|neonatal|neonate)(?: human)?(?: stage)?(?: \((?P<span>[^()]*)\))?$")
_NEWBORN_SPAN = re.compile(rf"^0 ?- ?(?P<n>{_NUM})[- ]{_UNIT}$")  # 0-28 days: the first 28 days
_THEILER = re.compile(r"^(?:theiler stage|ts) ?(?P<n>\d+)[a-z]?$")
_NEWBORN_THEILER = 27  # TS1-26 are prenatal, TS27 the newborn mouse, TS28 all of postnatal life
_PRENATAL = re.compile(
    r"^(?:carnegie stage|cs) ?\d+[a-z]?$"
    r"|^(?:embryonic|fetal|foetal|prenatal|cleavage|blastula|gastrula|neurula|organogenesis|morula)(?: human)? stage$"
    r"|post-?fertili[sz]ation|\blmp\b|^embryonic day\b|^e ?\d+(?:\.\d+)?(?: ?- ?\d+(?:\.\d+)?)?(?: stage)?$"
)
_WITH_SPAN = re.compile(r"^(?P<name>[^()]+?) \((?P<span>[^()]+)\)$")  # nursing stage (0-11 months)


@dataclass(frozen=True)
class StageAge:
    """``age`` (a point in time, else None) and the span ``[age_min, age_max)`` in years (None:
    unknown or open-ended); ``kind`` (one of ``KINDS``) says which rule gave them."""

    age: float | None
    age_min: float | None
    age_max: float | None
    kind: str


_NOTHING = {kind: StageAge(None, None, None, kind) for kind in (PRENATAL, NO_AGE, MISSING, OUT_OF_RANGE, NOT_TEXT)}


def _years(n: float | str, unit: str) -> float:
    """``n`` units in years."""
    numerator, denominator = _UNITS[unit]
    return float(n) * numerator / denominator


def _end(n: str, unit: str) -> float:
    """Where a stage ending at ``n`` units ends: ``23-year-old`` and ``15-19 year-old`` count
    completed units, so they run to the end of unit 23 / 19 (24 / 20 years)."""
    return _years(float(n) + 1.0, unit)


def _normalize(text: str) -> str:
    return " ".join(text.strip().lower().split())


def _in_range(stage: StageAge) -> StageAge:
    """Out-of-range (or infinite) years are a typo or a unit mix-up, not a donor: all null."""
    low = stage.age_min if stage.age_min is not None else stage.age
    if low is None:
        return stage
    high = stage.age_max if stage.age_max is not None else low
    if MIN_AGE_YEARS <= low < MAX_AGE_YEARS and high <= MAX_AGE_YEARS:
        return stage
    return _NOTHING[OUT_OF_RANGE]


def _numeric_stage(text: str) -> StageAge | None:
    """A label stating numbers: point, range, ``under N``, ``N+``/``N and over``, decade."""
    if match := _POINT.match(text):
        low = _years(match["n"], match["unit"])
        return StageAge(low, low, _end(match["n"], match["unit"]), POINT)
    if match := _RANGE.match(text):
        if float(match["b"]) < float(match["a"]):
            return None
        return StageAge(None, _years(match["a"], match["unit"]), _end(match["b"], match["unit"]), RANGE)
    if match := _UNDER.match(text):
        return StageAge(None, 0.0, _years(match["n"], match["unit"]), RANGE)
    if match := _PLUS.match(text) or _AND_OVER.match(text):
        return StageAge(None, _years(match["n"], match["unit"]), None, CENSORED)
    if match := _DECADE.match(text):
        k = _ORDINALS.index(match["k"]) + 1 if match["k"] in _ORDINALS else int(match["k"][:-2])
        return StageAge(None, 10.0 * (k - 1), 10.0 * k, RANGE) if k >= 1 else None
    if _CENTENARIAN.match(text):
        return StageAge(None, 100.0, None, CENSORED)
    return None


def _newborn(span: str | None) -> StageAge:
    """Age 0; the end of the newborn period where stated (``0-28 days``: the first 28 days, so
    [0, 28 days), not the ``+1`` of a range of completed units)."""
    match = _NEWBORN_SPAN.match(span) if span else None
    return StageAge(0.0, 0.0, _years(match["n"], match["unit"]) if match else None, NEWBORN)


def _named_stage(text: str) -> StageAge | None:
    """Stages named by a word: prenatal ones, Theiler stages, the newborn."""
    if _PRENATAL.search(text):
        return _NOTHING[PRENATAL]
    if match := _THEILER.match(text):
        n = int(match["n"])
        if n < _NEWBORN_THEILER:
            return _NOTHING[PRENATAL]
        return _newborn(None) if n == _NEWBORN_THEILER else _NOTHING[NO_AGE]
    if match := _NEWBORN.match(text):
        return _newborn(match["span"])
    return None


@lru_cache(maxsize=4096)
def _parse_text(text: str) -> StageAge:
    text = _normalize(text)
    if not text:
        return _NOTHING[MISSING]
    stage = _named_stage(text) or _numeric_stage(text)
    if stage is None and (match := _WITH_SPAN.match(text)):  # nursing stage (0-11 months)
        stage = _numeric_stage(match["span"]) or _named_stage(match["name"])
    return _in_range(stage) if stage is not None else _NOTHING[NO_AGE]


def parse_stage_text(label: object) -> StageAge:
    """The age and bounds a free-text stage label states by itself; ``missing`` for None or
    blank, ``not_text`` for a number (a numeric obs column is not a stage label)."""
    if label is None:
        return _NOTHING[MISSING]
    if not isinstance(label, str):
        return _NOTHING[NOT_TEXT]
    return _parse_text(label)


def parse_age_years(label: str | None) -> float | None:
    """The point age of a free-text label (None for ranges, prenatal, broad, unknown labels)."""
    return parse_stage_text(label).age


@lru_cache(maxsize=1)
def ontology_parser():  # imported lazily (a dataset process inherits it from the warm start)
    from cellxgene_ontology_guide.ontology_parser import OntologyParser

    return OntologyParser()


def _current_term(term_id: str) -> str | None:
    """``term_id`` itself, or for a deprecated term its ``replaced_by`` (followed to the end);
    None for an id the ontology does not know."""
    parser = ontology_parser()
    seen = {term_id}
    try:
        while (replacement := parser.get_term_replacement(term_id)) and replacement not in seen:
            seen.add(replacement)
            term_id = replacement
        parser.get_term_label(term_id)
    except (KeyError, ValueError):
        return None
    return term_id


@lru_cache(maxsize=4096)
def term_label(term_id: str | None) -> str | None:
    """The ontology label of a development-stage term id, or None when unknown."""
    if not isinstance(term_id, str) or not term_id.strip():
        return None
    try:
        return ontology_parser().get_term_label(term_id.strip())
    except (KeyError, ValueError):
        return None


_SPANS = (POINT, RANGE, CENSORED, NEWBORN, PRENATAL)  # what a synonym may add to a label without numbers


def _gives_nothing(stage: StageAge) -> bool:
    return stage.kind in (NO_AGE, MISSING)


def _from_synonyms(stage: StageAge, synonyms: list[str]) -> StageAge:
    """For a label without numbers, the first synonym stating a span (``late adult stage``:
    ``60+ years``); for a newborn label without its span, a synonym ``0-N unit``."""
    for synonym in synonyms:
        if stage.kind == NEWBORN:
            found = _newborn(_normalize(synonym))
            if found.age_max is not None:
                return found
        elif (found := parse_stage_text(synonym)).kind in _SPANS:
            return found
    return stage


@lru_cache(maxsize=4096)
def _term_stage(term_id: str) -> tuple[StageAge, str] | None:
    """The age of a term id and the canonical label it was read from; None for an unknown id."""
    current = _current_term(term_id)
    if current is None:
        return None
    parser = ontology_parser()
    label = parser.get_term_label(current)
    stage = parse_stage_text(label)
    if _gives_nothing(stage) or (stage.kind == NEWBORN and stage.age_max is None):
        stage = _from_synonyms(stage, parser.get_term_synonyms(current))
    return stage, label


class _NotText:
    """Stands for any non-string label in the cache key (a numeric obs column)."""


_NOT_TEXT_LABEL = _NotText()


@lru_cache(maxsize=4096)
def _resolve(label: str | _NotText | None, term_id: str | None) -> tuple[StageAge, str | None]:
    term = _term_stage(term_id) if term_id else None
    if term is not None and not _gives_nothing(term[0]):
        return term
    text = parse_stage_text(label)
    if term is not None and _gives_nothing(text):
        return term
    return text, label if isinstance(label, str) else None


def resolve_stage(label: object, term_id: object = None) -> tuple[StageAge, str | None]:
    """``stage_age`` and the label text it was read from (the term's canonical label, or the
    free text; None for a missing or numeric label), for the log."""
    key = label if label is None or isinstance(label, str) else _NOT_TEXT_LABEL
    return _resolve(key, term_id.strip() or None if isinstance(term_id, str) else None)


def stage_age(label: object, term_id: object = None) -> StageAge:
    """The age and bounds of a cell's development stage: from ``term_id`` first (its canonical
    label, following ``replaced_by``, then its synonyms), from the free-text ``label`` when the
    id is absent, unknown or gives nothing (``unknown``, ``adult stage``)."""
    return resolve_stage(label, term_id)[0]


def clear_caches() -> None:
    """Forget parsed stages and the loaded ontology (tests that swap the ontology parser)."""
    for cached in (_parse_text, term_label, _term_stage, _resolve, ontology_parser):
        cached.cache_clear()
