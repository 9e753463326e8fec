"""The deterministic report narrative, with slots for every number and id (see facts.py).

Three styles: "en" (English sentences, the default), "de" (German sentences) and "de_terse"
(German, one line per item: the second style the demo LoRA adapter teaches). `narrative(facts,
style)` is the template text (always the first wording); with `rng` it picks among paraphrases,
which is how data_builder.py makes varied training reports.
"""

from __future__ import annotations

import random

from app.inspection.findings import FAIL, PASS
from app.report.facts import GERMAN_CLASS, ReasonFacts, ReportFacts

STYLES = ("en", "de", "de_terse")
LANG = {"en": "en", "de": "de", "de_terse": "de"}


class _Pick:
    """First option when deterministic, a random one with an rng."""

    def __init__(self, rng: random.Random | None) -> None:
        self.rng = rng

    def __call__(self, *options: str) -> str:
        return options[0] if self.rng is None else self.rng.choice(options)

    def maybe(self, p: float = 0.5) -> bool:
        return self.rng is not None and self.rng.random() < p


def _plural_en(cls: str) -> str:
    return cls + ("es" if cls.endswith(("ch", "sh", "s", "x")) else "s")


def _de(cls: str) -> str:
    return GERMAN_CLASS.get(cls, cls)


def narrative(facts: ReportFacts, style: str = "en", rng: random.Random | None = None) -> str:
    """The slotted summary text of a report in one style."""
    if style not in STYLES:
        raise ValueError(f"unknown report style {style!r}; choose one of {', '.join(STYLES)}")
    pick = _Pick(rng)
    return {"en": _english, "de": _german, "de_terse": _german_terse}[style](facts, pick)


# ---------------------------------------------------------------------------------------------


def _en_defect(d, pick: _Pick) -> str:
    name = f"{d.defect_class.capitalize()} #{d.index}"
    have = [k for k in ("length", "width", "area") if getattr(d, k) is not None]
    if not have:
        return f"{name} could not be measured."
    slot = {k: f"{{d{d.index}.{k}}}" for k in have}
    variant = pick("is", "has", "colon")
    if variant == "is":
        dims = [f"{slot[k]} {'long' if k == 'length' else 'wide'}" for k in have if k != "area"]
        text = f"{name} is " + " and ".join(dims) if dims else name
        if "area" in slot:
            text += (", with an area of " if dims else " has an area of ") + slot["area"]
        return text + "."
    if variant == "has":
        parts = [f"a {k} of {slot[k]}" for k in have]
        return f"{name} has " + ", ".join(parts[:-1]) + (" and " if len(parts) > 1 else "") + \
            parts[-1] + "."
    return f"{name}: " + ", ".join(f"{k} {slot[k]}" for k in have) + "."


def _en_reason(r: ReasonFacts, facts: ReportFacts, pick: _Pick) -> str:
    k, cls = r.defect, r.defect_class
    who = f"{cls} #{k}" if k else cls
    m, a = f"{{r{r.index}.measured}}", f"{{r{r.index}.allowed}}"
    if r.rule in ("max_length", "max_width", "max_area"):
        label = {"max_length": "length", "max_width": "width", "max_area": "area"}[r.rule]
        return pick(f"The {label} of {who} ({m}) exceeds the limit of {a}.",
                    f"{who.capitalize()} exceeds the {label} limit: {m} against {a} allowed.",
                    f"The {label} of {who} is {m}, more than the allowed {a}.")
    if r.rule == "max_count":
        return pick(f"{m} {_plural_en(cls)} were found where at most {a} are allowed.",
                    f"Too many {_plural_en(cls)}: {m} found, {a} allowed.")
    if r.rule == "forbidden_zone":
        return pick(f"{who.capitalize()} lies in the forbidden zone {{r{r.index}.zone}}.",
                    f"{who.capitalize()} touches the forbidden zone {{r{r.index}.zone}}.")
    if r.rule in ("min_edge_distance", "min_datum_distance"):
        to = "edge" if r.rule == "min_edge_distance" else "datum"
        return pick(f"{who.capitalize()} is {m} from the {to}, closer than the required {a}.",
                    f"The distance of {who} to the {to} ({m}) is below the required {a}.")
    if r.rule == "not_measured":
        return f"{who.capitalize()} could not be checked because it was not measured."
    return f"{who.capitalize()} is not a class of the recipe."


def _english(facts: ReportFacts, pick: _Pick) -> str:
    out = [pick(
        "Part {part} (serial {serial}, lot {lot}) was inspected at station {station} "
        "by {operator}.",
        "Station {station} inspected part {part}, serial {serial}, from lot {lot}; "
        "operator {operator}.",
        "Part {part} from lot {lot} (serial {serial}) was checked by {operator} at station "
        "{station}.",
    )]
    n = len(facts.defects)
    if n == 0:
        out.append(pick("No defects were found.", "The inspection found no defects."))
    else:
        noun = "defect" if n == 1 else "defects"
        verb = "was" if n == 1 else "were"
        out.append(pick(f"{{n}} {noun} {verb} found.", f"The inspection found {{n}} {noun}."))
        out += [_en_defect(d, pick) for d in facts.defects]
    out += [_en_reason(r, facts, pick) for r in facts.reasons]
    if facts.verdict == FAIL:
        out.append(pick("The part does not conform to recipe {recipe}: FAIL.",
                        "Verdict: FAIL, the part does not conform to recipe {recipe}.",
                        "The part is rejected against recipe {recipe}: FAIL."))
    elif facts.verdict == PASS:
        within = "All defects are within the limits of" if n else "The part meets"
        out.append(pick(f"{within} recipe {{recipe}}; the part conforms: PASS.",
                        "Verdict: PASS, the part conforms to recipe {recipe}.",
                        "The part is accepted against recipe {recipe}: PASS."))
    else:
        out.append("No verdict was given.")
    return " ".join(out)


# ---------------------------------------------------------------------------------------------


def _de_defect(d, pick: _Pick) -> str:
    name = f"{_de(d.defect_class)} #{d.index}"
    parts = []
    if d.length is not None:
        parts.append(f"eine Länge von {{d{d.index}.length}}")
    if d.width is not None:
        parts.append(f"eine Breite von {{d{d.index}.width}}")
    if d.area is not None:
        parts.append(f"eine Fläche von {{d{d.index}.area}}")
    if not parts:
        return f"{name} konnte nicht gemessen werden."
    body = ", ".join(parts[:-1]) + (" und " if len(parts) > 1 else "") + parts[-1]
    if pick.maybe(0.4):
        short = {"length": "Länge", "width": "Breite", "area": "Fläche"}
        return f"{name}: " + ", ".join(
            f"{short[k]} {{d{d.index}.{k}}}" for k in ("length", "width", "area")
            if getattr(d, k) is not None) + "."
    return pick(f"{name} hat {body}.", f"{name} weist {body} auf.",
                f"Bei {name} wurden {body} gemessen.")


def _de_reason(r: ReasonFacts, pick: _Pick) -> str:
    who = f"{_de(r.defect_class)} #{r.defect}" if r.defect else _de(r.defect_class)
    m, a = f"{{r{r.index}.measured}}", f"{{r{r.index}.allowed}}"
    if r.rule in ("max_length", "max_width", "max_area"):
        label = {"max_length": "Länge", "max_width": "Breite", "max_area": "Fläche"}[r.rule]
        return pick(f"Die {label} von {who} beträgt {m} und überschreitet den Grenzwert von {a}.",
                    f"{who}: {label} {m} über dem Grenzwert {a}.")
    if r.rule == "max_count":
        return f"Es wurden {m}-mal {_de(r.defect_class)} gefunden, zulässig sind {a}."
    if r.rule == "forbidden_zone":
        return f"{who} liegt in der Sperrzone {{r{r.index}.zone}}."
    if r.rule in ("min_edge_distance", "min_datum_distance"):
        to = "Rand" if r.rule == "min_edge_distance" else "Bezug"
        return f"{who} liegt {m} vom {to} entfernt, gefordert sind {a}."
    if r.rule == "not_measured":
        return f"{who} konnte nicht geprüft werden, weil er nicht gemessen wurde."
    return f"{who} ist keine Klasse des Prüfplans."


def _german(facts: ReportFacts, pick: _Pick) -> str:
    out = [pick(
        "Das Teil {part} (Seriennummer {serial}, Los {lot}) wurde an Station {station} von "
        "{operator} geprüft.",
        "Station {station} hat das Teil {part} aus Los {lot} (Seriennummer {serial}) geprüft; "
        "Prüfer {operator}.",
        "Geprüft wurde Teil {part} aus Los {lot}, Seriennummer {serial}, von {operator} an "
        "Station {station}.",
    )]
    n = len(facts.defects)
    out.append(pick("Es wurden keine Fehler gefunden.", "Die Oberfläche ist fehlerfrei.")
               if n == 0 else pick("Es wurden {n} Fehler gefunden.",
                                   "Die Prüfung ergab {n} Fehler.", "Gefunden: {n} Fehler."))
    out += [_de_defect(d, pick) for d in facts.defects]
    out += [_de_reason(r, pick) for r in facts.reasons]
    if facts.verdict == FAIL:
        out.append(pick("Das Teil ist nach Prüfplan {recipe} nicht in Ordnung: FAIL.",
                        "Ergebnis: FAIL, das Teil ist nach Prüfplan {recipe} nicht in Ordnung.",
                        "Urteil nach Prüfplan {recipe}: FAIL."))
    elif facts.verdict == PASS:
        out.append(pick("Das Teil ist nach Prüfplan {recipe} in Ordnung: PASS.",
                        "Ergebnis: PASS, das Teil ist nach Prüfplan {recipe} in Ordnung.",
                        "Urteil nach Prüfplan {recipe}: PASS."))
    else:
        out.append("Es wurde kein Urteil gefällt.")
    return " ".join(out)


def _german_terse(facts: ReportFacts, pick: _Pick) -> str:
    out = [pick("Teil {part}, SN {serial}, Los {lot}, Station {station}.",
                "Teil {part} / Los {lot} / SN {serial} / Station {station}.")]
    out.append(pick("Befunde: {n}.", "{n} Befunde."))
    for d in facts.defects:
        vals = []
        for key, name in (("length", "L"), ("width", "B"), ("area", "A")):
            if getattr(d, key) is not None:
                vals.append(f"{name} {{d{d.index}.{key}}}")
        out.append(f"#{d.index} {_de(d.defect_class)}: " + (", ".join(vals) or "ohne Maß") + ".")
    for r in facts.reasons:
        m, a = f"{{r{r.index}.measured}}", f"{{r{r.index}.allowed}}"
        who = f"#{r.defect} {_de(r.defect_class)}" if r.defect else _de(r.defect_class)
        label = {"max_length": "Länge", "max_width": "Breite", "max_area": "Fläche",
                 "max_count": "Anzahl", "min_edge_distance": "Randabstand",
                 "min_datum_distance": "Bezugsabstand"}.get(r.rule)
        if label and r.rule.startswith("max"):
            out.append(f"Abweichung {who}: {label} {m} > {a}.")
        elif label:
            out.append(f"Abweichung {who}: {label} {m} < {a}.")
        elif r.rule == "forbidden_zone":
            out.append(f"Abweichung {who}: Sperrzone {{r{r.index}.zone}}.")
        else:
            out.append(f"Abweichung {who}: nicht prüfbar.")
    out.append(pick("Ergebnis: {verdict}.", "Urteil: {verdict}.") if facts.verdict else
               "Ergebnis: offen.")
    return "\n".join(out)
