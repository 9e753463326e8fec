"""Lot acceptance by attributes: MIL-STD-105E (= ISO 2859-1, ANSI/ASQ Z1.4) single sampling,
normal inspection.

Table I gives the sample size code letter from the lot size and the inspection level; Table II-A
gives, per code letter and AQL, the sample size and the acceptance/rejection numbers, or an arrow
to the first plan below (larger sample) or above (smaller sample). When the sample size reaches
the lot size, every part is inspected (the standard's rule).

Table II-A is stored as it is printed: along each diagonal (code letter index + AQL column index)
the entry is the same, 0/1 on the diagonal of (A, 6.5), (B, 4.0), ... (Q, 0.010); then an up
arrow, a down arrow, 1/2, 2/3, 3/4, 5/6, 7/8, 10/11, 14/15, 21/22 and up arrows beyond. 30/31 and
44/45 exist only in the columns above AQL 10 (nonconformities per hundred units).
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
# Table II-A along a diagonal, starting at diagonal index 14 (the 0/1 diagonal).
_DIAGONAL = ((0, 1), UP, DOWN, (1, 2), (2, 3), (3, 4), (5, 6), (7, 8), (10, 11), (14, 15), (21, 22))
_HIGH_AQL = ((30, 31), (44, 45))  # continue the diagonal in columns above AQL 10 only
_FIRST = 14


def table_entry(letter: str, aql: float) -> tuple[int, int] | str:
    """Table II-A cell: (Ac, Re), UP or DOWN."""
    r = CODE_LETTERS.index(letter)
    c = aql_column(aql)
    k = r + c - _FIRST
    if k < 0:
        return DOWN
    if k < len(_DIAGONAL):
        return _DIAGONAL[k]
    k -= len(_DIAGONAL)
    if AQL_VALUES[c] > 10 and k < len(_HIGH_AQL):
        return _HIGH_AQL[k]
    return UP


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
        # R (the last row) has no plan below: its only down arrow (AQL 0.015) is read as up
        r += 1 if entry == DOWN and r < len(CODE_LETTERS) - 1 else -1
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
