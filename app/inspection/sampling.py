"""Lot acceptance by attributes: MIL-STD-105E (= ISO 2859-1, ANSI/ASQ Z1.4) single sampling,
normal inspection.

Table I gives the sample size code letter from the lot size and the inspection level; Table II-A
gives, per code letter and AQL, the sample size and the acceptance/rejection numbers, or an arrow
to the first plan below (larger sample) or above (smaller sample). When the sample size reaches
the lot size, every part is inspected (the standard's rule).

Both tables are stored cell by cell and were checked cell by cell against two independent public
transcriptions, which agree on every cell of both tables (for Table II-A they give the plan
reached after the arrows; the arrows below are the ones that lead to those plans):
- the R package AQLSchemes (J. Lawson), as in github.com/fjgonzalezmgt/AQLSchemesCust,
  R/AAZ14Single.R: Table I and Table II-A (sample size, Ac and Re after the arrows);
- GB/T 2828.1-2012 (identical to ISO 2859-1:1999), as in github.com/nihantao-crosis/
  quality-platform, src/core/__tests__/fixtures/gbt2828-1-2012-table1-levels.tsv,
  gbt2828-1-2012-tables-2abc-full16.tsv and gbt2828-1-2012-tables-2abc-aql15-1000.tsv.
Table II-A is not a plain diagonal pattern: plans with Ac 30 and 44 exist only for code letters
A to E (AQL 150 to 1000); from F on, every row ends at Ac 21 followed by up arrows. Row A at AQL
10 has a down arrow (to C's 1/2), and row R has up arrows at AQL 0.010 and 0.015.
"""

from __future__ import annotations

import math
from dataclasses import dataclass

CODE_LETTERS = "ABCDEFGHJKLMNPQR"
SAMPLE_SIZES = (2, 3, 5, 8, 13, 20, 32, 50, 80, 125, 200, 315, 500, 800, 1250, 2000)
INSPECTION_LEVELS = ("S-1", "S-2", "S-3", "S-4", "I", "II", "III")
AQL_VALUES = (
    0.010,
    0.015,
    0.025,
    0.040,
    0.065,
    0.10,
    0.15,
    0.25,
    0.40,
    0.65,
    1.0,
    1.5,
    2.5,
    4.0,
    6.5,
    10,
    15,
    25,
    40,
    65,
    100,
    150,
    250,
    400,
    650,
    1000,
)

# Table I: upper bound of each lot size range, then the code letter per inspection level in the
# order of INSPECTION_LEVELS.
TABLE_I = (
    (8, "AAAAAAB"),
    (15, "AAAAABC"),
    (25, "AABBBCD"),
    (50, "ABBCCDE"),
    (90, "BBCCCEF"),
    (150, "BBCDDFG"),
    (280, "BCDEEGH"),
    (500, "BCDEFHJ"),
    (1200, "CCEFGJK"),
    (3200, "CDEGHKL"),
    (10000, "CDFGJLM"),
    (35000, "CDFHKMN"),
    (150000, "DEGJLNP"),
    (500000, "DEGJMPQ"),
    (math.inf, "DEHKNQR"),
)

UP, DOWN = "up", "down"

# Table II-A, one row per code letter, one column per AQL in the order of AQL_VALUES. A number is
# the acceptance number Ac of the plan (sample size SAMPLE_SIZES[row]); its rejection number is
# Ac + 1 (true of every plan in this table). "v" = use the first plan below the arrow (larger
# sample), "^" = use the first plan above it (smaller sample). AQL values above 10 apply to
# nonconformities per hundred units only.
#     AQL (staggered labels, each right-aligned over its column):
#       0.010 0.025 0.065  0.15  0.40   1.0   2.5   6.5    15    40   100   250   650
#          0.015 0.040  0.10  0.25  0.65   1.5   4.0    10    25    65   150   400  1000
_TABLE_II_A_ROWS = {
    "A": "  v  v  v  v  v  v  v  v  v  v  v  v  v  v  0  v  v  1  2  3  5  7 10 14 21 30",  # n=2
    "B": "  v  v  v  v  v  v  v  v  v  v  v  v  v  0  ^  v  1  2  3  5  7 10 14 21 30 44",  # n=3
    "C": "  v  v  v  v  v  v  v  v  v  v  v  v  0  ^  v  1  2  3  5  7 10 14 21 30 44  ^",  # n=5
    "D": "  v  v  v  v  v  v  v  v  v  v  v  0  ^  v  1  2  3  5  7 10 14 21 30 44  ^  ^",  # n=8
    "E": "  v  v  v  v  v  v  v  v  v  v  0  ^  v  1  2  3  5  7 10 14 21 30 44  ^  ^  ^",  # n=13
    "F": "  v  v  v  v  v  v  v  v  v  0  ^  v  1  2  3  5  7 10 14 21  ^  ^  ^  ^  ^  ^",  # n=20
    "G": "  v  v  v  v  v  v  v  v  0  ^  v  1  2  3  5  7 10 14 21  ^  ^  ^  ^  ^  ^  ^",  # n=32
    "H": "  v  v  v  v  v  v  v  0  ^  v  1  2  3  5  7 10 14 21  ^  ^  ^  ^  ^  ^  ^  ^",  # n=50
    "J": "  v  v  v  v  v  v  0  ^  v  1  2  3  5  7 10 14 21  ^  ^  ^  ^  ^  ^  ^  ^  ^",  # n=80
    "K": "  v  v  v  v  v  0  ^  v  1  2  3  5  7 10 14 21  ^  ^  ^  ^  ^  ^  ^  ^  ^  ^",  # n=125
    "L": "  v  v  v  v  0  ^  v  1  2  3  5  7 10 14 21  ^  ^  ^  ^  ^  ^  ^  ^  ^  ^  ^",  # n=200
    "M": "  v  v  v  0  ^  v  1  2  3  5  7 10 14 21  ^  ^  ^  ^  ^  ^  ^  ^  ^  ^  ^  ^",  # n=315
    "N": "  v  v  0  ^  v  1  2  3  5  7 10 14 21  ^  ^  ^  ^  ^  ^  ^  ^  ^  ^  ^  ^  ^",  # n=500
    "P": "  v  0  ^  v  1  2  3  5  7 10 14 21  ^  ^  ^  ^  ^  ^  ^  ^  ^  ^  ^  ^  ^  ^",  # n=800
    "Q": "  0  ^  v  1  2  3  5  7 10 14 21  ^  ^  ^  ^  ^  ^  ^  ^  ^  ^  ^  ^  ^  ^  ^",  # n=1250
    "R": "  ^  ^  1  2  3  5  7 10 14 21  ^  ^  ^  ^  ^  ^  ^  ^  ^  ^  ^  ^  ^  ^  ^  ^",  # n=2000
}
_ARROWS = {"v": DOWN, "^": UP}


def _parse_row(row: str) -> tuple[tuple[int, int] | str, ...]:
    cells = tuple(_ARROWS.get(tok) or (int(tok), int(tok) + 1) for tok in row.split())
    if len(cells) != len(AQL_VALUES):
        raise AssertionError(f"Table II-A row has {len(cells)} cells, expected {len(AQL_VALUES)}")
    return cells


TABLE_II_A: dict[str, tuple[tuple[int, int] | str, ...]] = {
    letter: _parse_row(row) for letter, row in _TABLE_II_A_ROWS.items()
}


def table_entry(letter: str, aql: float) -> tuple[int, int] | str:
    """Table II-A cell: (Ac, Re), UP or DOWN."""
    if letter not in TABLE_II_A:
        raise ValueError(f"code letter must be one of {CODE_LETTERS}; got {letter!r}")
    return TABLE_II_A[letter][aql_column(aql)]


def aql_column(aql: float) -> int:
    for i, a in enumerate(AQL_VALUES):
        if math.isclose(aql, a):
            return i
    raise ValueError(
        f"AQL {aql!r} is not in the table; use one of {', '.join(f'{a:g}' for a in AQL_VALUES)}"
    )


def code_letter(lot_size: int, level: str = "II") -> str:
    """Table I: sample size code letter for a lot size and inspection level."""
    if level not in INSPECTION_LEVELS:
        raise ValueError(
            f"inspection level must be one of {', '.join(INSPECTION_LEVELS)}; got {level!r}"
        )
    if not isinstance(lot_size, int) or lot_size < 2:
        raise ValueError(f"lot size must be an integer >= 2; got {lot_size!r}")
    col = INSPECTION_LEVELS.index(level)
    return next(letters[col] for upper, letters in TABLE_I if lot_size <= upper)


@dataclass(frozen=True)
class SamplingPlan:
    """A single sampling plan: inspect sample_size parts; accept the lot with at most `accept`
    nonconforming parts, reject it with `reject` or more."""

    lot_size: int
    level: str
    aql: float
    code_letter: str  # letter from Table I
    plan_letter: str  # letter whose plan is used after following the arrows
    sample_size: int
    accept: int
    reject: int
    full_inspection: bool  # the sample is the whole lot


def sampling_plan(lot_size: int, level: str, aql: float) -> SamplingPlan:
    """Normal-inspection single sampling plan for a lot."""
    first = code_letter(lot_size, level)
    r = CODE_LETTERS.index(first)
    entry = table_entry(first, aql)
    while isinstance(entry, str):
        r += 1 if entry == DOWN else -1
        if not 0 <= r < len(CODE_LETTERS):  # cannot happen with the table as printed
            raise AssertionError(f"Table II-A arrow leaves the table at {first}, AQL {aql:g}")
        entry = table_entry(CODE_LETTERS[r], aql)
    n = SAMPLE_SIZES[r]
    ac, re_ = entry
    full = n >= lot_size
    return SamplingPlan(
        lot_size=lot_size,
        level=level,
        aql=float(aql),
        code_letter=first,
        plan_letter=CODE_LETTERS[r],
        sample_size=min(n, lot_size),
        accept=ac,
        reject=re_,
        full_inspection=full,
    )


@dataclass(frozen=True)
class LotVerdict:
    plan: SamplingPlan
    inspected: int
    nonconforming: int
    accepted: bool
    message: str


def lot_verdict(plan: SamplingPlan, part_passed: list[bool]) -> LotVerdict:
    """Decide a lot from the verdicts (True = PASS) of its sampled parts.

    Rejects as soon as the nonconforming count reaches the rejection number (the standard allows
    stopping there); otherwise needs the whole sample.
    """
    bad = sum(1 for ok in part_passed if not ok)
    n = len(part_passed)
    if bad >= plan.reject:
        return LotVerdict(
            plan,
            n,
            bad,
            False,
            f"lot rejected: {bad} nonconforming >= Re {plan.reject} (n={plan.sample_size})",
        )
    if n < plan.sample_size:
        raise ValueError(
            f"the plan needs {plan.sample_size} sampled parts; only {n} given"
            f" with {bad} nonconforming"
        )
    return LotVerdict(
        plan,
        n,
        bad,
        True,
        f"lot accepted: {bad} nonconforming <= Ac {plan.accept} (n={plan.sample_size})",
    )
