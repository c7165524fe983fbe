"""Donor age in years from CellxGene ``development_stage`` labels (HsapDv / MmusDv).

Only labels that name one point in time give an age; ranges, decades, open-ended, prenatal and
broad stages give null, because a made-up midpoint would be a wrong training label.
"""

from __future__ import annotations

import re
from functools import lru_cache

DAYS_PER_YEAR = 365.25
_POINT = re.compile(
    r"^(?P<n>\d+(?:\.\d+)?)[- ](?P<unit>year|month|week|day)s?(?:-old)?(?: human)?(?: stage)?$"
)
_NEWBORN = re.compile(r"^newborn(?: human)? stage(?: \(0-28 days\))?$")
_YEARS_PER_UNIT = {"year": 1.0, "month": 1.0 / 12.0, "week": 7.0 / DAYS_PER_YEAR, "day": 1.0 / DAYS_PER_YEAR}


@lru_cache(maxsize=4096)
def parse_age_years(label: str | None) -> float | None:
    """``N-year-old stage`` -> N, ``N-month-old stage`` -> N/12, ``N weeks`` -> N*7/365.25,
    ``N-day-old stage`` -> N/365.25, ``newborn stage`` -> 0; anything else -> None."""
    if label is None:
        return None
    text = " ".join(label.strip().lower().split())
    if _NEWBORN.match(text):
        return 0.0
    match = _POINT.match(text)
    if not match:
        return None
    return float(match["n"]) * _YEARS_PER_UNIT[match["unit"]]


@lru_cache(maxsize=1)
def _ontology_parser():  # imported lazily: loading the ontology costs time only when needed
    from cellxgene_ontology_guide.ontology_parser import OntologyParser

    return OntologyParser()


@lru_cache(maxsize=4096)
def stage_label(term_id: str | None) -> str | None:
    """The ontology label of a development-stage term id, or None when unknown."""
    if not term_id:
        return None
    try:
        return _ontology_parser().get_term_label(term_id.strip())
    except (KeyError, ValueError):
        return None
