"""One defect number: 1-based, stable after deletes, the same in the store and every export."""

from __future__ import annotations

import numpy as np

from app.inspection.findings import FAIL, Finding, Inspection, Reason, Verdict
from app.store import InspectionStore
from app.store.export import coco_from_inspections


def _f(cls="pit", y=0):
    m = np.zeros((20, 20), bool)
    m[y:y + 3, 2:6] = True
    return Finding(cls, m, None, 0.9)


def test_store_keeps_numbers_across_deletes_and_never_reuses_one(tmp_path):
    with InspectionStore(tmp_path / "s.db") as store:
        insp = Inspection("a.png", "d", findings=[_f(y=0), _f(y=5), _f(y=10)],
                          verdict=Verdict(FAIL, (Reason("max_area", "pit", "pit #3: big", 9.0,
                                                        1.0, "px", 3),)))
        iid = store.add_inspection(insp)
        assert [f.number for f in insp.findings] == [1, 2, 3]
        store.delete_defect(insp.findings[0].id, actor="t")
        store.delete_defect(insp.findings[2].id, actor="t")
        back = store.get_inspection(iid)
        assert [f.number for f in back.findings] == [2]  # not renumbered to 1
        assert back.verdict.reasons[0].defect_number == 3
        new = _f(y=15)
        store.add_defect(iid, new, actor="t")
        assert new.number == 4  # 3 was deleted; its number is not given to another defect
        assert [f.number for f in store.get_inspection(iid).findings] == [2, 4]
        data = coco_from_inspections([store.get_inspection(iid)], root=tmp_path)
        assert [a["defect_number"] for a in data["annotations"]] == [2, 4]


def test_store_reads_a_reason_written_with_the_zero_based_index(tmp_path):
    import sqlite3

    with InspectionStore(tmp_path / "s.db") as store:
        iid = store.add_inspection(Inspection(
            "a.png", "d", findings=[_f()],
            verdict=Verdict(FAIL, (Reason("max_area", "pit", "m", 9.0, 1.0, "px", 1),))))
    con = sqlite3.connect(tmp_path / "s.db")
    assert con.execute("select finding_index from verdict_reasons").fetchone() == (0,)
    con.close()
    with InspectionStore(tmp_path / "s.db") as store:
        assert store.get_inspection(iid).verdict.reasons[0].defect_number == 1
