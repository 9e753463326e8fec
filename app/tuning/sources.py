"""Training data from the inspection store: the defects inspectors accepted, with their images.

Only defects a person accepted (accepted_by set) and did not delete count; each inspection's
newest record of an image is used. The image is read again from its stored path and must
still have the digest stored with the inspection (a replaced or edited photo would teach the
model masks of another picture): otherwise it is skipped with a message naming it.
"""

from __future__ import annotations

from dataclasses import dataclass
from datetime import datetime
from pathlib import Path

import numpy as np

from app.store.store import InspectionStore
from sam_engine.errors import SamEngineError
from sam_engine.image_io import image_digest, load_image
from sam_engine.learned.data import MIN_AREA, DataError, Dataset, Instance, make_image


@dataclass(frozen=True)
class StoreFilter:
    """Which inspections to learn from (all when every field is None)."""

    recipe: str | None = None  # recipe name (part type)
    lot: str | None = None
    since: datetime | None = None
    until: datetime | None = None


def _aware(t: datetime | None) -> datetime | None:
    """A date as given on the command line: without a zone it is this machine's local time."""
    return None if t is None or t.tzinfo is not None else t.astimezone()


def read_store(db: str | Path, flt: StoreFilter = StoreFilter()) -> Dataset:
    since, until = _aware(flt.since) or flt.since, _aware(flt.until) or flt.until
    store = InspectionStore(db, readonly=True)
    data = Dataset([], source=f"store {db}")
    newest: dict[str, object] = {}
    n_inspections = 0
    try:
        for insp in store.iter_inspections(lot=flt.lot):
            n_inspections += 1
            if flt.recipe is not None and insp.recipe_name != flt.recipe:
                continue
            if since is not None and insp.time < since:
                continue
            if until is not None and insp.time > until:
                continue
            newest[insp.image_path] = insp  # ids ascend: the last one is the newest
    finally:
        store.close()
    for path, insp in newest.items():
        accepted = [f for f in insp.findings if f.accepted_by and f.mask is not None]
        if not accepted:
            continue
        try:
            rgb = load_image(path)
        except (SamEngineError, OSError) as exc:
            data.problems.append(f"{path}: cannot read the inspected image ({exc}); skipped")
            continue
        if image_digest(rgb) != insp.image_sha256:
            data.problems.append(f"{path}: the image changed since it was inspected (digest "
                                 "differs from the store's); skipped")
            continue
        inst = []
        for f in accepted:
            if f.mask.shape != rgb.shape[:2]:
                data.problems.append(f"{path}: defect #{f.number} mask is "
                                     f"{f.mask.shape[1]}x{f.mask.shape[0]} but the image is "
                                     f"{rgb.shape[1]}x{rgb.shape[0]}; skipped")
            elif np.count_nonzero(f.mask) < MIN_AREA:
                data.problems.append(f"{path}: defect #{f.number} mask is empty or under "
                                     f"{MIN_AREA} px; skipped")
            else:
                inst.append(Instance(f.defect_class, np.asarray(f.mask, bool)))
        if inst:
            data.images.append(make_image(rgb, inst, source=path))
    if not data.images:
        what = ", ".join(f"{k} {v}" for k, v in flt.__dict__.items() if v is not None)
        raise DataError(
            f"{db}: no accepted defect to learn from among {n_inspections} inspections"
            + (f" ({what})" if what else "")
            + ". Accept defects in the inspector's window (Enter) first, or tune from a "
            "folder of image + mask pairs or a COCO file"
            + (":\n  " + "\n  ".join(data.problems[:10]) if data.problems else ""))
    return data

