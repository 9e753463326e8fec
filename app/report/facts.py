"""What a report may state, taken from an Inspection, and the check of a text against it.

Numbers are never trusted to a language model. Narratives are written with slots (`{d1.length}`,
`{r1.allowed}`, `{part}`, ...) that `fill_slots` replaces with values formatted from the
findings; afterwards `check_text` extracts every claim left in the text (numbers with their
units, defect classes, defect numbers `#k`, identifiers, dates, the verdict) and compares each
with the findings. `FactCheck.accuracy` is the share of claims that match.

Defects carry their defect number (Finding.number, 1-based and stable: `#3` stays `#3` after
#1 is deleted), the same as in the GUI, the CSV and COCO exports and the store.
"""

from __future__ import annotations

import hashlib
import math
import re
from collections import Counter
from dataclasses import dataclass, field
from datetime import UTC, datetime
from pathlib import PurePath

from app.inspection.findings import FAIL, PASS, Inspection, Reason, defect_numbers

# How each defect class is named in report text (English and German, singular and plural).
# A recipe class not listed here is matched by its own name.
CLASS_WORDS: dict[str, tuple[str, ...]] = {
    "scratch": ("scratch", "scratches", "kratzer"),
    "pit": ("pit", "pits", "pore", "poren"),
    "crack": ("crack", "cracks", "riss", "risse"),
    "stain": ("stain", "stains", "fleck", "flecken"),
    "inclusion": ("inclusion", "inclusions", "einschluss", "einschlüsse"),
    "patch": ("patch", "patches", "belag", "beläge"),
    "dent": ("dent", "dents", "delle", "dellen"),
    "burr": ("burr", "burrs", "grat", "grate"),
}
GERMAN_CLASS = {
    "scratch": "Kratzer",
    "pit": "Pore",
    "crack": "Riss",
    "stain": "Fleck",
    "inclusion": "Einschluss",
    "patch": "Belag",
    "dent": "Delle",
    "burr": "Grat",
}
# Verdict phrases, longest first so "does not conform" is not read as "conform".
VERDICT_WORDS: tuple[tuple[str, str], ...] = (
    ("does not conform", FAIL),
    ("nicht in ordnung", FAIL),
    ("nicht bestanden", FAIL),
    ("in ordnung", PASS),
    ("bestanden", PASS),
    ("conforms", PASS),
    ("rejected", FAIL),
    ("accepted", PASS),
    ("fail", FAIL),
    ("pass", PASS),
)
COUNT_WORDS = {
    w: i
    for i, ws in enumerate(
        [(), (), ("two", "zwei"), ("three", "drei"), ("four", "vier"), ("five", "fünf"),
         ("six", "sechs"), ("seven", "sieben"), ("eight", "acht"), ("nine", "neun"),
         ("ten", "zehn"), ("eleven", "elf"), ("twelve", "zwölf")]
    )
    for w in ws
}
RULE_LABELS = {
    "max_area": ("area", "Fläche"),
    "max_length": ("length", "Länge"),
    "max_width": ("width", "Breite"),
    "max_count": ("count", "Anzahl"),
    "forbidden_zone": ("overlap with a forbidden zone", "Überdeckung mit Sperrzone"),
    "min_edge_distance": ("distance to the edge", "Randabstand"),
    "min_datum_distance": ("distance to the datum", "Bezugsabstand"),
    "not_measured": ("not measured", "nicht gemessen"),
    "unknown_class": ("unknown class", "unbekannte Klasse"),
}
SLOT_RE = re.compile(r"\{([a-z][a-z0-9_.]*)\}")


@dataclass(frozen=True)
class Quantity:
    """A number a report may state: its value, unit ("mm", "mm²", "px", "count", "") and the
    defect it belongs to (1-based; None for whole-part numbers)."""

    value: float
    unit: str
    defect: int | None = None
    decimals: int = 2

    def text(self, lang: str = "en") -> str:
        if self.unit == "count":
            return str(int(self.value))
        s = f"{self.value:.{self.decimals}f}"
        if lang == "de":
            s = s.replace(".", ",")
        return f"{s} {self.unit}" if self.unit else s


@dataclass(frozen=True)
class DefectFacts:
    index: int  # 1-based
    defect_class: str
    length: Quantity | None = None
    width: Quantity | None = None
    area: Quantity | None = None
    edge: Quantity | None = None
    datum: Quantity | None = None
    score: float | None = None
    bbox: tuple[int, int, int, int] | None = None
    limits: dict[str, Quantity] = field(default_factory=dict)  # "length"/"width"/"area" -> limit

    @property
    def measures(self) -> dict[str, Quantity]:
        names = ("length", "width", "area", "edge", "datum")
        return {n: q for n in names if (q := getattr(self, n)) is not None}


@dataclass(frozen=True)
class ReasonFacts:
    index: int  # 1-based
    rule: str
    defect_class: str
    defect: int | None  # 1-based finding number, None for count rules
    measured: Quantity | None
    allowed: Quantity | None
    zone: str = ""


@dataclass(frozen=True)
class ReportFacts:
    """Everything a report about one inspection may state (ISO/IEC 17020 7.4.2 fields)."""

    report_id: str
    issued: datetime
    inspected: datetime
    part_id: str
    serial: str
    lot: str
    station: str
    operator: str
    approver: str
    image_path: str
    image_sha256: str
    engine: str
    model_id: str
    checkpoint_sha256: str | None
    recipe_name: str
    recipe_version: str
    defects: tuple[DefectFacts, ...]
    verdict: str  # PASS, FAIL or "" (not judged)
    reasons: tuple[ReasonFacts, ...]

    @property
    def class_counts(self) -> Counter[str]:
        return Counter(d.defect_class for d in self.defects)

    @property
    def identifiers(self) -> tuple[str, ...]:
        """Names and ids the text may quote verbatim."""
        ids = [self.report_id, self.part_id, self.serial, self.lot, self.station, self.operator,
               self.approver, self.engine, self.model_id, self.recipe_name, self.recipe_version,
               self.image_sha256[:12], PurePath(self.image_path).name,
               PurePath(self.image_path).stem]
        ids += [r.zone for r in self.reasons if r.zone]
        return tuple(sorted({i for i in ids if i}, key=len, reverse=True))

    def quantities(self) -> list[Quantity]:
        """Every number the text may state."""
        out = [Quantity(len(self.defects), "count"), Quantity(len(self.reasons), "count")]
        out += [Quantity(n, "count") for n in self.class_counts.values()]
        for d in self.defects:
            out.append(Quantity(d.index, "count", d.index))
            out += [q for q in d.measures.values()]
            out += list(d.limits.values())
            if d.score is not None:
                out.append(Quantity(d.score, "", d.index))
        for r in self.reasons:
            out += [q for q in (r.measured, r.allowed) if q is not None]
        return out

    def slots(self, lang: str = "en") -> dict[str, str]:
        """Slot name -> text; the only way numbers and ids get into a generated report."""
        s = {
            "part": self.part_id or "-",
            "serial": self.serial or "-",
            "lot": self.lot or "-",
            "station": self.station or "-",
            "operator": self.operator or "-",
            "recipe": f"{self.recipe_name} {self.recipe_version}".strip() or "-",
            "n": str(len(self.defects)),
            "date": self.inspected.strftime("%Y-%m-%d"),
            "verdict": self.verdict or "-",
        }
        for d in self.defects:
            for name, q in d.measures.items():
                s[f"d{d.index}.{name}"] = q.text(lang)
            for name, q in d.limits.items():
                s[f"d{d.index}.max_{name}"] = q.text(lang)
        for r in self.reasons:
            if r.measured is not None:
                s[f"r{r.index}.measured"] = r.measured.text(lang)
            if r.allowed is not None:
                s[f"r{r.index}.allowed"] = r.allowed.text(lang)
            if r.zone:
                s[f"r{r.index}.zone"] = r.zone
        return s


def report_id(inspection: Inspection) -> str:
    """A unique, stable id: the inspection date and a digest of what identifies the inspection."""
    key = "|".join([inspection.image_sha256, inspection.time.isoformat(), inspection.part_id,
                    inspection.serial, str(inspection.id)])
    digest = hashlib.sha256(key.encode()).hexdigest()[:8].upper()
    return f"R-{inspection.time:%Y%m%d}-{digest}"


def _mm_or_px(mm: float | None, px: float | None, unit: str, idx: int) -> Quantity | None:
    if mm is not None:
        return Quantity(float(mm), unit, idx)
    if px is not None:
        return Quantity(float(px), "px", idx, decimals=0)
    return None


def _limits(rule, idx: int) -> dict[str, Quantity]:
    out = {}
    for name, attr, unit in (("length", "max_length_mm", "mm"), ("width", "max_width_mm", "mm"),
                             ("area", "max_area_mm2", "mm²")):
        v = getattr(rule, attr, None)
        if v is not None:
            out[name] = Quantity(float(v), unit, idx)
    return out


def _reason(i: int, r: Reason) -> ReasonFacts:
    defect = r.defect_number
    unit = "count" if r.unit == "count" else r.unit
    dec = 0 if unit in ("px", "count") else 2

    def q(v):
        return None if v is None else Quantity(float(v), unit, defect, dec)

    zone = ""
    if r.rule == "forbidden_zone" and (m := re.search(r"'([^']+)'", r.message)):
        zone = m.group(1)
    return ReasonFacts(i, r.rule, r.defect_class, defect, q(r.measured), q(r.allowed), zone)


def facts_from_inspection(
    inspection: Inspection, *, recipe=None, approver: str = "", issued: datetime | None = None
) -> ReportFacts:
    """The facts of one inspection; a recipe (app.inspection.recipe.Recipe) adds each class's
    limits."""
    defects = []
    for i, f in zip(defect_numbers(inspection.findings), inspection.findings, strict=True):
        m = f.measurements
        rule = recipe.rule(f.defect_class) if recipe is not None else None
        if m is None:
            defects.append(DefectFacts(i, f.defect_class, score=f.score,
                                       limits=_limits(rule, i) if rule else {}))
            continue
        defects.append(DefectFacts(
            index=i,
            defect_class=f.defect_class,
            length=_mm_or_px(m.feret_max_mm, m.feret_max_px, "mm", i),
            width=_mm_or_px(m.thickness_mm, m.thickness_px, "mm", i),
            area=_mm_or_px(m.area_mm2, m.area_px, "mm²", i),
            edge=_mm_or_px(m.edge_distance_mm, m.edge_distance_px, "mm", i),
            datum=_mm_or_px(m.datum_distance_mm, m.datum_distance_px, "mm", i),
            score=f.score,
            bbox=tuple(int(v) for v in m.bbox),
            limits=_limits(rule, i) if rule else {},
        ))
    v = inspection.verdict
    time = inspection.time if inspection.time.tzinfo else inspection.time.replace(tzinfo=UTC)
    return ReportFacts(
        report_id=report_id(inspection),
        issued=issued or datetime.now(UTC),
        inspected=time,
        part_id=inspection.part_id,
        serial=inspection.serial,
        lot=inspection.lot,
        station=inspection.station,
        operator=inspection.operator,
        approver=approver,
        image_path=inspection.image_path,
        image_sha256=inspection.image_sha256,
        engine=inspection.engine,
        model_id=inspection.model_id,
        checkpoint_sha256=inspection.checkpoint_sha256,
        recipe_name=inspection.recipe_name,
        recipe_version=inspection.recipe_version,
        defects=tuple(defects),
        verdict="" if v is None else v.status,
        reasons=tuple(_reason(i, r) for i, r in enumerate(() if v is None else v.reasons, 1)),
    )


# ---------------------------------------------------------------------------------------------
# slots


def fill_slots(text: str, facts: ReportFacts, lang: str = "en") -> tuple[str, list[str]]:
    """Replace every known `{slot}` by its value; returns the text and the unknown slot names
    (left in the text as `{?name}` so the check counts them as wrong)."""
    values = facts.slots(lang)
    unknown: list[str] = []

    def sub(m: re.Match) -> str:
        name = m.group(1)
        if name in values:
            return values[name]
        unknown.append(name)
        return "{?" + name + "}"

    return SLOT_RE.sub(sub, text), unknown


def slotify(text: str, facts: ReportFacts) -> str:
    """The inverse of fill_slots for a text people wrote: ids and numbers that equal a slot's
    value (English or German form) become that slot. Turns written reports into training targets.
    Numbers in a sentence about defect #k prefer the slots of #k."""
    pieces = re.split(r"((?<=[.!?;])[ \t]+|\n+)", text)
    for i in range(0, len(pieces), 2):
        sentence = pieces[i]
        refs = {int(k) for k in re.findall(r"#(\d+)", sentence)}
        cands = []
        for lang in ("en", "de"):
            for name, value in facts.slots(lang).items():
                if name in ("n", "verdict") or value == "-":
                    continue
                owner = _slot_defect(name, facts)
                rank = 0 if not refs or owner is None or owner in refs else 1
                cands.append((-len(value), rank, name, value))
        for _, _, name, value in sorted(cands):
            pattern = r"(?<![\w.,{])" + re.escape(value) + r"(?![\w}]|[.,]\d)"
            sentence = re.sub(pattern, "{" + name + "}", sentence)
        pieces[i] = sentence
    return "".join(pieces)


def _slot_defect(name: str, facts: ReportFacts) -> int | None:
    m = re.match(r"([dr])(\d+)\.", name)
    if m is None:
        return None
    k = int(m.group(2))
    if m.group(1) == "d":
        return k
    return facts.reasons[k - 1].defect if 0 < k <= len(facts.reasons) else None


# ---------------------------------------------------------------------------------------------
# checking


@dataclass(frozen=True)
class Claim:
    """One checkable statement found in a text."""

    kind: str  # "number", "count", "class", "defect", "verdict", "identifier", "date", "slot"
    text: str
    sentence: int
    ok: bool
    why: str = ""


@dataclass(frozen=True)
class FactCheck:
    claims: tuple[Claim, ...]
    verdict_stated: bool  # the right verdict is stated somewhere in the text

    @property
    def wrong(self) -> tuple[Claim, ...]:
        return tuple(c for c in self.claims if not c.ok)

    @property
    def n_correct(self) -> int:
        return sum(c.ok for c in self.claims)

    @property
    def accuracy(self) -> float:
        """Share of claims that match the findings (1.0 for a text without claims)."""
        return self.n_correct / len(self.claims) if self.claims else 1.0

    @property
    def passed(self) -> bool:
        return not self.wrong and self.verdict_stated

    def summary(self) -> str:
        s = f"{self.n_correct}/{len(self.claims)} claims match the findings"
        if not self.verdict_stated:
            s += "; the verdict is not stated"
        return s


def split_sentences(text: str) -> list[str]:
    """Sentences: split after . ! ? ; or a line break (decimal points are not followed by space)."""
    parts = re.split(r"(?<=[.!?;])\s+|\n+", text.strip())
    return [p.strip() for p in parts if p.strip()]


_NUM_RE = re.compile(r"(?<![\w.,#{?])(-?\d+(?:[.,]\d+)?)(?![\w]|[.,]\d)\s*(mm²|mm2|mm\^2|mm|px|%)?")
_DATE_RE = re.compile(r"\b\d{4}-\d{2}-\d{2}\b")
_ID_RE = re.compile(r"\b[A-Za-z]+[-_/][\w\-/]*\d[\w\-/]*")
_WORD_RE = re.compile(r"[^\W\d_]+")


def _class_of(word: str, facts: ReportFacts) -> str | None:
    w = word.lower()
    for cls, words in CLASS_WORDS.items():
        if w in words:
            return cls
    for d in facts.defects:
        if w == d.defect_class.lower():
            return d.defect_class
    return None


def _blank(s: str, start: int, end: int) -> str:
    return s[:start] + " " * (end - start) + s[end:]


def _unit_ok(claim_unit: str | None, q: Quantity) -> bool:
    if claim_unit in (None, "%"):
        return True
    cu = "mm²" if claim_unit in ("mm²", "mm2", "mm^2") else claim_unit
    return cu == q.unit


def _matches(value: float, decimals: int, unit: str | None, q: Quantity) -> bool:
    if not _unit_ok(unit, q):
        return False
    if unit is None and q.unit not in ("count", "") and decimals == 0:
        # a bare integer is a count or a defect number, not a rounded measurement
        return False
    tol = 0.5 * 10.0 ** (-decimals) + 1e-9
    return math.isfinite(q.value) and abs(q.value - value) <= tol


def check_text(text: str, facts: ReportFacts) -> FactCheck:
    """Every claim in text, each marked correct or wrong against the facts."""
    claims: list[Claim] = []
    verdict_ok = False
    present = {d.defect_class for d in facts.defects}
    by_number = {d.index: d for d in facts.defects}
    all_q = facts.quantities()
    dates = {facts.inspected.strftime("%Y-%m-%d"), facts.issued.strftime("%Y-%m-%d")}
    for si, sentence in enumerate(split_sentences(text)):
        s = sentence
        for m in re.finditer(r"\{\??([^}]*)\}", s):
            claims.append(Claim("slot", m.group(0), si, False, f"unknown slot {m.group(1)!r}"))
        s = re.sub(r"\{[^}]*\}", lambda m: " " * len(m.group(0)), s)
        for ident in facts.identifiers:
            pat = re.compile(r"(?<![\w.-])" + re.escape(ident) + r"(?![\w-]|\.\d)")
            for m in reversed(list(pat.finditer(s))):
                claims.append(Claim("identifier", ident, si, True))
                s = _blank(s, m.start(), m.end())
        for m in reversed(list(_DATE_RE.finditer(s))):
            ok = m.group(0) in dates
            claims.append(Claim("date", m.group(0), si, ok, "" if ok else "not a report date"))
            s = _blank(s, m.start(), m.end())
        for m in reversed(list(_ID_RE.finditer(s))):
            claims.append(Claim("identifier", m.group(0), si, False, "unknown identifier"))
            s = _blank(s, m.start(), m.end())
        # defect numbers, with the class word right before or after them
        refs: set[int] = set()
        for m in reversed(list(re.finditer(r"(?:([^\W\d_]+)\s+)?#(\d+)(?:\s+([^\W\d_]+))?", s))):
            k = int(m.group(2))
            ok = k in by_number
            claims.append(Claim("defect", f"#{k}", si, ok, "" if ok else "no such defect"))
            if ok:
                refs.add(k)
            for g in (1, 3):
                word = m.group(g)
                cls = word and _class_of(word, facts)
                if cls:
                    good = ok and by_number[k].defect_class == cls
                    claims.append(Claim("class", f"{word} #{k}", si, good,
                                        "" if good else f"#{k} is not a {cls}"))
                    break
            s = _blank(s, m.start(), m.end())
        low = s.lower()
        for phrase, status in VERDICT_WORDS:
            pat = re.compile(r"(?<!\w)" + re.escape(phrase) + r"(?:es|ed|s)?(?!\w)")
            for m in reversed(list(pat.finditer(low))):
                ok = status == facts.verdict
                verdict_ok |= ok
                claims.append(Claim("verdict", s[m.start():m.end()], si, ok,
                                    "" if ok else f"the verdict is {facts.verdict or 'none'}"))
                low = _blank(low, m.start(), m.end())
                s = _blank(s, m.start(), m.end())
        for m in _WORD_RE.finditer(s):
            word = m.group(0)
            cls = _class_of(word, facts)
            if cls is not None:
                ok = cls in present
                claims.append(Claim("class", word, si, ok, "" if ok else f"no {cls} was found"))
            elif word.lower() in COUNT_WORDS:
                n = COUNT_WORDS[word.lower()]
                ok = any(q.unit == "count" and q.value == n for q in all_q)
                claims.append(Claim("count", word, si, ok, "" if ok else "no such count"))
        allowed = [q for q in all_q if q.defect is None or not refs or q.defect in refs]
        for m in _NUM_RE.finditer(s):
            raw, unit = m.group(1), m.group(2)
            value = float(raw.replace(",", "."))
            dec = len(raw.split(",")[-1] if "," in raw else raw.split(".")[-1]) if re.search(
                r"[.,]", raw) else 0
            ok = any(_matches(value, dec, unit, q) for q in allowed)
            claims.append(Claim("number", m.group(0).strip(), si, ok,
                                "" if ok else "matches no measurement, limit or count"))
    return FactCheck(tuple(claims), verdict_ok or not facts.verdict)
