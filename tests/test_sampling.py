"""MIL-STD-105E / ISO 2859-1 normal single sampling: known table entries and arrows."""

from __future__ import annotations

import pytest

from app.inspection.sampling import (
    AQL_VALUES,
    CODE_LETTERS,
    DOWN,
    UP,
    code_letter,
    lot_verdict,
    sampling_plan,
    table_entry,
)


@pytest.mark.parametrize(
    ("lot", "level", "letter"),
    [
        (8, "II", "A"),
        (9, "II", "B"),
        (50, "II", "D"),
        (51, "II", "E"),
        (100, "II", "F"),
        (500, "II", "H"),
        (1000, "II", "J"),
        (3200, "II", "K"),
        (10000, "II", "L"),
        (35000, "II", "M"),
        (150000, "II", "N"),
        (500000, "II", "P"),
        (500001, "II", "Q"),
        (1000, "I", "G"),
        (1000, "III", "K"),
        (600000, "III", "R"),
        (2, "III", "B"),
        (100, "S-1", "B"),
        (1000, "S-2", "C"),
        (5000, "S-3", "F"),
        (5000, "S-4", "G"),
        (600000, "S-4", "K"),
        (600000, "S-1", "D"),
    ],
)
def test_table_i_code_letters(lot, level, letter):
    assert code_letter(lot, level) == letter


@pytest.mark.parametrize(
    ("letter", "aql", "entry"),
    [
        ("A", 6.5, (0, 1)),
        ("Q", 0.010, (0, 1)),
        ("G", 0.40, (0, 1)),
        ("F", 1.0, UP),
        ("G", 1.0, DOWN),
        ("H", 1.0, (1, 2)),
        ("J", 1.0, (2, 3)),
        ("K", 1.0, (3, 4)),
        ("L", 1.0, (5, 6)),
        ("M", 1.0, (7, 8)),
        ("N", 1.0, (10, 11)),
        ("P", 1.0, (14, 15)),
        ("Q", 1.0, (21, 22)),
        ("R", 1.0, UP),
        ("K", 2.5, (7, 8)),
        ("J", 2.5, (5, 6)),
        ("H", 2.5, (3, 4)),
        ("G", 2.5, (2, 3)),
        ("K", 10, (21, 22)),
        ("L", 10, UP),
        ("R", 0.65, (21, 22)),
        ("A", 1000, (30, 31)),
        ("B", 1000, (44, 45)),
        ("C", 1000, UP),
        ("A", 0.010, DOWN),
        ("H", 4.0, (5, 6)),
        ("E", 0.65, DOWN),
    ],
)
def test_table_ii_a_entries(letter, aql, entry):
    assert table_entry(letter, aql) == entry


@pytest.mark.parametrize(
    ("lot", "level", "aql", "n", "ac", "re"),
    [
        (1000, "II", 1.0, 80, 2, 3),
        (2000, "II", 2.5, 125, 7, 8),
        (2000, "II", 1.0, 125, 3, 4),
        (500, "II", 0.65, 80, 1, 2),  # H: down arrow to J
        (100, "II", 1.0, 13, 0, 1),  # F: up arrow to E
        (50, "S-1", 4.0, 3, 0, 1),  # A: down arrow to B
        (10000, "II", 4.0, 200, 14, 15),
        (300, "II", 6.5, 50, 7, 8),
    ],
)
def test_sampling_plans(lot, level, aql, n, ac, re):
    plan = sampling_plan(lot, level, aql)
    assert (plan.sample_size, plan.accept, plan.reject) == (n, ac, re)
    assert plan.reject == plan.accept + 1
    assert not plan.full_inspection


# Cells checked against two independent public transcriptions that agree on every cell of
# Table II-A: the R package AQLSchemes (github.com/fjgonzalezmgt/AQLSchemesCust, R/AAZ14Single.R)
# and GB/T 2828.1-2012 = ISO 2859-1:1999 (github.com/nihantao-crosis/quality-platform,
# src/core/__tests__/fixtures/gbt2828-1-2012-tables-2abc-full16.tsv and -aql15-1000.tsv).
@pytest.mark.parametrize(
    ("letter", "aql", "entry"),
    [
        ("A", 10, DOWN),  # top row: no plan above; leads to C's 1/2
        ("A", 15, DOWN),
        ("A", 25, (1, 2)),
        ("A", 650, (21, 22)),
        ("B", 650, (30, 31)),
        ("D", 400, (44, 45)),
        ("D", 650, UP),
        ("E", 150, (30, 31)),
        ("E", 250, (44, 45)),
        ("E", 400, UP),
        ("F", 65, (21, 22)),
        ("F", 100, UP),  # 30/31 and 44/45 exist only in rows A..E
        ("F", 150, UP),
        ("G", 65, UP),
        ("J", 15, (21, 22)),
        ("J", 25, UP),
        ("K", 15, UP),
        ("L", 15, UP),
        ("Q", 0.015, UP),
        ("Q", 0.025, DOWN),
        ("R", 0.010, UP),
        ("R", 0.015, UP),  # bottom row: no plan below; leads to P's 0/1
        ("R", 0.025, (1, 2)),
    ],
)
def test_table_ii_a_verified_cells(letter, aql, entry):
    assert table_entry(letter, aql) == entry


@pytest.mark.parametrize(
    ("lot", "level", "aql", "plan_letter", "n", "ac", "re", "full"),
    [
        (5, "II", 10, "C", 5, 1, 2, True),  # A: down arrows through B to C; n=5 >= lot
        (8, "S-1", 15, "B", 3, 1, 2, False),  # A: down arrow to B
        (1000, "II", 25, "H", 50, 21, 22, False),  # J: up arrow to H
        (150, "II", 100, "E", 13, 21, 22, False),  # F: up arrow to E
        (150, "II", 150, "E", 13, 30, 31, False),
        (10**6, "II", 1000, "B", 3, 44, 45, False),  # Q: up arrows all the way to B
        (10**6, "III", 0.015, "P", 800, 0, 1, False),  # R: up arrows to P
        (10**6, "II", 0.025, "R", 2000, 1, 2, False),  # Q: down arrow to R
    ],
)
def test_verified_plans_after_arrows(lot, level, aql, plan_letter, n, ac, re, full):
    plan = sampling_plan(lot, level, aql)
    assert plan.plan_letter == plan_letter
    assert (plan.sample_size, plan.accept, plan.reject) == (min(n, lot), ac, re)
    assert plan.full_inspection is full


def test_table_ii_a_structure():
    for r, letter in enumerate(CODE_LETTERS):
        row = [table_entry(letter, aql) for aql in AQL_VALUES]
        if r == 0:
            assert UP not in row
        if r == len(CODE_LETTERS) - 1:
            assert DOWN not in row
        plans = [cell for cell in row if not isinstance(cell, str)]
        assert plans == sorted(plans) and all(re == ac + 1 for ac, re in plans)
        assert max(plans)[0] == (44 if 1 <= r <= 4 else 30 if r == 0 else 21)


def test_every_cell_resolves_to_a_plan():
    for letter in CODE_LETTERS:
        for aql in AQL_VALUES:
            assert table_entry(letter, aql) in (UP, DOWN) or len(table_entry(letter, aql)) == 2
    for lot in (2, 10, 90, 1000, 10**6):
        for level in ("S-1", "S-2", "S-3", "S-4", "I", "II", "III"):
            for aql in AQL_VALUES:
                plan = sampling_plan(lot, level, aql)
                assert 1 <= plan.sample_size <= lot
                assert plan.reject == plan.accept + 1


def test_small_lot_full_inspection():
    plan = sampling_plan(5, "II", 0.10)  # the plan's sample (125) exceeds the lot
    assert plan.full_inspection and plan.sample_size == 5
    assert (plan.accept, plan.reject) == (0, 1)


def test_lot_verdict():
    plan = sampling_plan(1000, "II", 1.0)  # n=80, Ac=2, Re=3
    ok = lot_verdict(plan, [True] * 78 + [False] * 2)
    assert ok.accepted and ok.nonconforming == 2
    bad = lot_verdict(plan, [True] * 77 + [False] * 3)
    assert not bad.accepted and "Re 3" in bad.message
    early = lot_verdict(plan, [False, False, False])  # rejection is decided early
    assert not early.accepted
    with pytest.raises(ValueError, match="needs 80"):
        lot_verdict(plan, [True] * 10)


def test_bad_inputs():
    with pytest.raises(ValueError, match="AQL"):
        sampling_plan(100, "II", 0.3)
    with pytest.raises(ValueError, match="inspection level"):
        code_letter(100, "IV")
    with pytest.raises(ValueError, match="lot size"):
        code_letter(1, "II")
