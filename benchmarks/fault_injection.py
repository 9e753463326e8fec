"""Fault injection: bad inputs, corrupt files, kills and concurrent writers against the real CLI.

Every scenario runs `python -m app.shell.cli ...` (or `app.shell.line_main` for ONNX) as a
subprocess on small
synthetic parts with the classic engine (a random-weight MobileSAM vit_t for checkpoints and the
embedding cache, a tiny random SAM exported to ONNX for the ONNX files), and is classified as:

  clear error   non-zero exit, no traceback, the message names the file (or option) at fault
  vague error   non-zero exit, no traceback, but the file/option is not named
  traceback     a Python traceback was printed (whatever the exit status)
  recovered     exit 0 and the result equals the one from pristine inputs (the damage was
                detected and repaired, or did not touch what the result depends on)
  silent wrong  exit 0 and a result that differs from the one from pristine inputs
  survived      a kill (SIGKILL at a fault point of app.batch.faults) and a rerun gave exactly
                the results of an uninterrupted run: nothing lost, nothing twice
  lost          after the kill and rerun, results are missing, duplicated or different

    .venv/bin/python benchmarks/fault_injection.py [--only SUBSTR ...] [--fast] [--list]
        [--json benchmarks/results/fault_injection.json] [--markdown TABLE.md] [--keep]

prints the table of scenarios and the totals and writes them as JSON (the full sweep takes
about 15 minutes on 2 busy CPU cores, most of it the vit_t embedding-cache scenarios).
tests/test_fault_injection.py runs a fast subset of the same scenarios.
"""

from __future__ import annotations

import argparse
import json
import os
import shutil
import sqlite3
import subprocess
import sys
import tempfile
import time
from collections import Counter
from collections.abc import Callable
from dataclasses import asdict, dataclass, field
from pathlib import Path

REPO = Path(__file__).resolve().parents[1]
if str(REPO) not in sys.path:
    sys.path.insert(0, str(REPO))

OUTCOMES = ("clear error", "vague error", "traceback", "recovered", "silent wrong", "survived",
            "lost")
BAD = ("traceback", "silent wrong", "lost", "vague error")
RECIPE = REPO / "samples" / "recipes" / "demo_part.toml"
N_PARTS = 3
TIMEOUT_S = 300
CLASSIC = ("--engine", "classic")


# ------------------------------------------------------------------------------ running the CLI
@dataclass
class Proc:
    args: list[str]
    returncode: int
    stdout: str
    stderr: str
    seconds: float

    @property
    def text(self) -> str:
        return self.stdout + "\n" + self.stderr


def run_cli(args: list[str], env: dict[str, str] | None = None, module: str = "app.shell.cli",
            wait: bool = True) -> Proc | subprocess.Popen:
    """`python -m app.shell.cli ARGS` in the repository, with `env` added to a clean environment."""
    full = {k: v for k, v in os.environ.items() if not k.startswith("SAM_INSPECT_")}
    full.update(PYTHONPATH=str(REPO), QT_QPA_PLATFORM="offscreen", **(env or {}))
    cmd = [sys.executable, "-m", module, *map(str, args)]
    if not wait:
        return subprocess.Popen(cmd, cwd=REPO, env=full, stdout=subprocess.PIPE,
                                stderr=subprocess.PIPE, text=True)
    t0 = time.perf_counter()
    p = subprocess.run(cmd, cwd=REPO, env=full, capture_output=True, text=True,
                       timeout=TIMEOUT_S)
    return Proc(cmd, p.returncode, p.stdout, p.stderr, time.perf_counter() - t0)


def classify(proc: Proc, names: tuple[str, ...], ok: Callable[[], bool] | None) -> str:
    """The outcome of one run (module doc); `ok` judges the result of an exit-0 run."""
    if "Traceback (most recent call last)" in proc.text:
        return "traceback"
    if proc.returncode != 0:
        return "clear error" if any(n in proc.text for n in names) else "vague error"
    return "recovered" if ok is not None and ok() else "silent wrong"


# ------------------------------------------------------------------------------ damaging files
def truncate(path: Path, keep: float = 0.5) -> None:
    data = path.read_bytes()
    path.write_bytes(data[:max(1, int(len(data) * keep))])


def flip_bit(path: Path, at: float | int = 0.5, bit: int = 0) -> None:
    """Flip one bit: at a fraction of the file's length (float) or at a byte offset (int)."""
    data = bytearray(path.read_bytes())
    i = at if isinstance(at, int) else min(len(data) - 1, int(len(data) * at))
    data[i] ^= 1 << bit
    path.write_bytes(bytes(data))


def flip_char(path: Path, char: str) -> None:
    """Flip the lowest bit of the first `char` of a text file ('{' -> 'z', ',' -> '-', ...)."""
    data = bytearray(path.read_bytes())
    data[data.index(char.encode())] ^= 1
    path.write_bytes(bytes(data))


def garbage(path: Path) -> None:
    path.write_bytes(os.urandom(2048))


def empty(path: Path) -> None:
    path.write_bytes(b"")


DAMAGE: dict[str, Callable[[Path], None]] = {
    "truncated": truncate, "bit-flipped": flip_bit, "garbage": garbage, "empty": empty}


# ------------------------------------------------------------------------------ the workspace
class Workspace:
    """Pristine inputs and reference results, made once per session under `root`."""

    def __init__(self, root: Path):
        self.root = root
        root.mkdir(parents=True, exist_ok=True)
        self._refs: dict[str, object] = {}
        self._n = 0

    def fresh(self, name: str) -> Path:
        self._n += 1
        d = self.root / f"{self._n:03d}_{name.replace(' ', '_').replace('/', '_')}"
        d.mkdir(parents=True)
        return d

    # ---- images
    def part_image(self, folder: Path, suffix: str = ".png") -> tuple[Path, str]:
        """One synthetic part (240x320) as `part{suffix}` and the box of its first defect."""
        import cv2
        import numpy as np

        from sam_engine.synthetic.generator import make_part

        part = make_part(11, (240, 320), n_defects=2)
        img = cv2.cvtColor(part.image, cv2.COLOR_RGB2BGR)
        if suffix == ".tif":
            img = img.astype(np.uint16) * 257
        path = folder / f"part{suffix}"
        params = [cv2.IMWRITE_JPEG_QUALITY, 95] if suffix == ".jpg" else []
        assert cv2.imwrite(str(path), img, params)
        x0, y0, x1, y1 = part.instances[0].bbox
        return path, f"{max(x0 - 3, 0)},{max(y0 - 3, 0)},{min(x1 + 3, 320)},{min(y1 + 3, 240)}"

    def segment_mask(self, out: Path, stem: str = "part"):
        import cv2

        m = cv2.imread(str(out / f"{stem}_mask.png"), cv2.IMREAD_UNCHANGED)
        return None if m is None else m.tobytes()

    def reference_segment(self, suffix: str, extra: tuple[str, ...] = (), env=None):
        """The mask bytes `segment` writes for the pristine part{suffix} (cached)."""
        key = f"segment{suffix}{extra}"
        if key not in self._refs:
            d = self.fresh(f"ref_segment{suffix}")
            img, box = self.part_image(d, suffix)
            p = run_cli(["segment", img, "--box", box, "--out", d / "out",
                         *(extra or CLASSIC)], env=env)
            assert p.returncode == 0, p.text
            self._refs[key] = self.segment_mask(d / "out")
        return self._refs[key]

    # ---- batch inputs and results
    def batch_input(self, folder: Path, kind: str = "json") -> Path:
        """N_PARTS parts under folder/in with prompt files of `kind` (json, yolo, coco) under
        folder/prompts; returns the prompts folder (or the COCO file)."""
        from tests.batch_data import write_parts

        truth = write_parts(folder / "in", N_PARTS, prompts=folder / "prompts")
        prompts = folder / "prompts"
        if kind == "yolo":
            names = sorted({d["kind"] for ds in truth.values() for d in ds})
            for f in prompts.glob("*.json"):
                f.unlink()
            (prompts / "classes.txt").write_text("\n".join(names) + "\n")
            h, w = 240, 320
            for rel, ds in truth.items():
                lines = []
                for d in ds:
                    x0, y0, x1, y1 = d["box"]
                    lines.append(f"{names.index(d['kind'])} {(x0 + x1) / 2 / w:.6f} "
                                 f"{(y0 + y1) / 2 / h:.6f} {(x1 - x0) / w:.6f} "
                                 f"{(y1 - y0) / h:.6f}")
                (prompts / (Path(rel).stem + ".txt")).write_text("\n".join(lines) + "\n")
        elif kind == "coco":
            for f in prompts.glob("*.json"):
                f.unlink()
            names = sorted({d["kind"] for ds in truth.values() for d in ds})
            images, anns = [], []
            for i, (rel, ds) in enumerate(sorted(truth.items()), start=1):
                images.append({"id": i, "file_name": rel, "width": 320, "height": 240})
                for d in ds:
                    x0, y0, x1, y1 = d["box"]
                    anns.append({"id": len(anns) + 1, "image_id": i,
                                 "category_id": names.index(d["kind"]) + 1,
                                 "bbox": [x0, y0, x1 - x0, y1 - y0], "iscrowd": 0,
                                 "area": (x1 - x0) * (y1 - y0)})
            coco = {"images": images, "annotations": anns,
                    "categories": [{"id": k + 1, "name": n} for k, n in enumerate(names)]}
            (prompts / "annotations.json").write_text(json.dumps(coco))
            return prompts / "annotations.json"
        return prompts

    def batch_args(self, folder: Path, prompts: Path, out: Path | None = None,
                   recipe: Path = RECIPE) -> list:
        return ["batch", folder / "in", "--out", out or folder / "out", "--engine", "classic",
                "--prompts", prompts, "--recipe", recipe, "--quiet"]

    def reference_batch(self, kind: str = "json") -> dict:
        if f"batch_{kind}" not in self._refs:
            d = self.fresh(f"ref_batch_{kind}")
            p = run_cli(self.batch_args(d, self.batch_input(d, kind)))
            assert p.returncode == 0, p.text
            self._refs[f"batch_{kind}"] = batch_facts(d / "out")
        return self._refs[f"batch_{kind}"]


def batch_facts(out: Path, db: Path | None = None) -> dict:
    """What a batch run's results say, without times and paths: per image its findings (class,
    area, box, verdict) from findings.jsonl, the masks, and per image the inspections stored."""
    rows = []
    jl = out / "findings.jsonl"
    if jl.is_file():
        for line in jl.read_text().splitlines():
            if line.strip():
                r = json.loads(line)
                rows.append((r["image"], r.get("defect"), r.get("class"), r.get("area_px"),
                             r.get("x0"), r.get("y0"), r.get("x1"), r.get("y1"),
                             r.get("verdict")))
    masks = {p.name: p.read_bytes() for p in sorted((out / "masks").glob("*.png"))} \
        if (out / "masks").is_dir() else {}
    stored = db_counts(db or out / "inspections.db")
    summary = {}
    if (out / "summary.json").is_file():
        s = json.loads((out / "summary.json").read_text())
        summary = {k: s.get(k) for k in ("images_found", "defects", "verdicts")}
    return {"rows": sorted(rows, key=repr), "masks": masks, "stored": stored,
            "summary": summary}


def db_counts(db: Path) -> dict[str, int] | None:
    """Inspections per image path (file name) in an inspection database, read with sqlite3."""
    if not db.is_file():
        return None
    try:
        con = sqlite3.connect(f"file:{db}?mode=ro", uri=True)
        try:
            rows = con.execute("SELECT image_path, COUNT(*) FROM inspections GROUP BY image_path"
                               ).fetchall()
        finally:
            con.close()
    except sqlite3.Error as exc:
        return {"<unreadable>": str(exc)}  # type: ignore[dict-item]
    return {Path(p).name: n for p, n in rows}


def batch_diff(a: dict, b: dict, stored_factor: int = 1) -> list[str]:
    """What differs between two batch_facts (empty: the same results); `stored_factor`: how
    many times each inspection of `b` should be in `a`'s database."""
    want = {k: v * stored_factor for k, v in (b["stored"] or {}).items()}
    out = [k for k in ("rows", "masks", "summary") if a[k] != b[k]]
    if a["stored"] != want:
        out.append(f"stored {a['stored']} (want {want})")
    return out


def same_batch(a: dict, b: dict, stored_factor: int = 1) -> bool:
    return not batch_diff(a, b, stored_factor)


def judge_batch(p: Proc, names: tuple[str, ...], out: Path, ref: dict, db: Path | None = None,
                stored_factor: int = 1) -> tuple[str, str]:
    """classify() for a batch run, with what differs when an exit-0 run's results are wrong."""
    facts = batch_facts(out, db)
    diff = batch_diff(facts, ref, stored_factor)
    outcome = classify(p, names, lambda: not diff)
    detail = _last_line(p)
    if outcome == "silent wrong":
        detail = "exit 0 but differs in " + "; ".join(diff)
    return outcome, detail


# ------------------------------------------------------------------------------ scenarios
@dataclass
class Result:
    name: str
    group: str
    outcome: str
    seconds: float
    detail: str = ""


@dataclass
class Scenario:
    name: str
    group: str
    fn: Callable[[Workspace, Path], tuple[str, str]]
    fast: bool = False
    needs: tuple[str, ...] = field(default_factory=tuple)  # importable modules it needs


def _last_line(proc: Proc) -> str:
    lines = [ln for ln in proc.text.splitlines() if ln.strip()]
    err = [ln for ln in lines if "error" in ln.lower() or "Error" in ln]
    return (err[-1] if err else lines[-1] if lines else f"exit {proc.returncode}")[:240]


SCENARIOS: list[Scenario] = []


def scenario(name: str, group: str, fast: bool = False, needs: tuple[str, ...] = ()):
    def deco(fn):
        SCENARIOS.append(Scenario(name, group, fn, fast, needs))
        return fn
    return deco


# ---- bad command-line input (segment)
def _segment_bad(ws: Workspace, d: Path, extra: list, names: tuple[str, ...],
                 suffix: str = ".png", env=None, out: Path | None = None):
    img, box = ws.part_image(d, suffix)
    args = ["segment", img, *extra, "--out", out or d / "out", *CLASSIC]
    p = run_cli(args, env=env)
    return classify(p, names, ok=None), _last_line(p)


BAD_PROMPTS = {
    "negative point --point -5,-5": (["--point", "-5,-5"], ("point (-5, -5)",)),
    "negative point --point=-5,-5": (["--point=-5,-5"], ("point (-5, -5)",)),
    "point outside 500,5": (["--point", "500,5"], ("point (500, 5)",)),
    "box outside": (["--box", "10,10,400,100"], ("box (10, 10, 400, 100)",)),
    "box inverted": (["--box", "50,50,10,10"], ("box (50, 50, 10, 10)",)),
    "box with 3 numbers": (["--box", "1,2,3"], ("--box",)),
    "point NaN": (["--point", "nan,5"], ("NaN",)),
    "point label 7": (["--point", "10,10,7"], ("labels",)),
    "no prompt": ([], ("prompt",)),
}
for _name, (_extra, _names) in BAD_PROMPTS.items():
    scenario(f"segment {_name}", "bad input", fast=_name.startswith("negative point --point -"))(
        lambda ws, d, e=_extra, n=_names: _segment_bad(ws, d, e, n))


@scenario("segment missing image", "bad input")
def _missing_image(ws, d):
    p = run_cli(["segment", d / "nope.png", "--box", "1,1,5,5", "--out", d / "out"])
    return classify(p, ("nope.png",), None), _last_line(p)


@scenario("segment --out under a file (read-only path)", "bad input", fast=True)
def _ro_out(ws, d):
    (d / "blocker").write_text("x")
    img, box = ws.part_image(d)
    p = run_cli(["segment", img, "--box", box, "--out", d / "blocker" / "out"])
    return classify(p, ("blocker",), None), _last_line(p)


@scenario("demo --out under a file (read-only path)", "bad input")
def _demo_ro_out(ws, d):
    (d / "blocker").write_text("x")
    p = run_cli(["demo", "--out", d / "blocker" / "demo", *CLASSIC])
    return classify(p, ("blocker",), None), _last_line(p)


@scenario("eval DATA_DIR without a manifest", "bad input")
def _eval_no_manifest(ws, d):
    p = run_cli(["eval", d / "empty_data"])
    return classify(p, ("empty_data",), None), _last_line(p)


@scenario("segment --out read-only folder (chmod 555)", "bad input")
def _ro_dir(ws, d):
    img, box = ws.part_image(d)
    out = d / "ro"
    out.mkdir()
    out.chmod(0o555)
    try:
        p = run_cli(["segment", img, "--box", box, "--out", out, *CLASSIC])
    finally:
        out.chmod(0o755)
    if p.returncode == 0 and os.geteuid() == 0:  # root writes anyway: a correct result
        return classify(p, ("ro",), lambda: ws.segment_mask(out) == ws.reference_segment(
            ".png")), "root may write into a read-only folder"
    return classify(p, ("ro",), None), _last_line(p)


@scenario("segment huge image (20000x20000 PNG header)", "bad input", fast=True)
def _huge(ws, d):
    path = d / "huge.png"
    path.write_bytes(png_header_only(20000, 20000))
    p = run_cli(["segment", path, "--box", "1,1,50,50", "--out", d / "out"])
    return classify(p, ("huge.png",), None), _last_line(p)


@scenario("segment image over SAM_INSPECT_MAX_PIXELS", "bad input")
def _over_limit(ws, d):
    return _segment_bad(ws, d, ["--box", "1,1,50,50"], ("part.png",),
                        env={"SAM_INSPECT_MAX_PIXELS": "1000"})


def png_header_only(w: int, h: int) -> bytes:
    """A PNG whose header claims w x h pixels, with a tiny invalid IDAT: a decoder that does
    not check the size first allocates w * h * 3 bytes before it finds the data is bad."""
    import struct
    import zlib

    def chunk(kind: bytes, data: bytes) -> bytes:
        return (struct.pack(">I", len(data)) + kind + data
                + struct.pack(">I", zlib.crc32(kind + data)))

    return (b"\x89PNG\r\n\x1a\n" + chunk(b"IHDR", struct.pack(">IIBBBBB", w, h, 8, 2, 0, 0, 0))
            + chunk(b"IDAT", zlib.compress(b"\0")) + chunk(b"IEND", b""))


# ---- damaged images (segment)
for _suffix in (".png", ".jpg", ".tif"):
    for _how in DAMAGE:
        def _damaged_image(ws, d, suffix=_suffix, how=_how):
            img, box = ws.part_image(d, suffix)
            DAMAGE[how](img)
            p = run_cli(["segment", img, "--box", box, "--out", d / "out", *CLASSIC])
            ref = ws.reference_segment(suffix)
            return classify(p, (img.name,), lambda: ws.segment_mask(d / "out") == ref), \
                _last_line(p)
        scenario(f"image {_suffix} {_how}", "corrupt file",
                 fast=(_suffix, _how) in ((".png", "truncated"), (".tif", "bit-flipped")))(
            _damaged_image)


# ---- bad batch input: prompt files, recipes, calibration
def _first_prompt(prompts: Path, suffix: str) -> Path:
    return sorted(prompts.glob(f"part_*{suffix}"))[0]


def _one_box(path: Path, box: list[float]) -> None:
    path.write_text(json.dumps({"defects": [{"kind": "pit", "box": box}]}))


PROMPT_DAMAGE = {
    "json truncated": ("json", lambda p: (_first_prompt(p, ".json"), truncate)),
    "json bit-flipped '{'": ("json", lambda p: (_first_prompt(p, ".json"),
                                                lambda f: flip_char(f, "{"))),
    "json bit-flipped ','": ("json", lambda p: (_first_prompt(p, ".json"),
                                                lambda f: flip_char(f, ","))),
    "json garbage": ("json", lambda p: (_first_prompt(p, ".json"), garbage)),
    "json empty": ("json", lambda p: (_first_prompt(p, ".json"), empty)),
    "yolo truncated": ("yolo", lambda p: (_first_prompt(p, ".txt"), lambda f: truncate(f, .3))),
    "yolo bit-flipped '.'": ("yolo", lambda p: (_first_prompt(p, ".txt"),
                                                lambda f: flip_char(f, "."))),
    "yolo garbage": ("yolo", lambda p: (_first_prompt(p, ".txt"), garbage)),
    "yolo classes.txt empty": ("yolo", lambda p: (p / "classes.txt", empty)),
    "coco truncated": ("coco", lambda p: (p, truncate)),
    "coco bit-flipped '['": ("coco", lambda p: (p, lambda f: flip_char(f, "["))),
    "coco garbage": ("coco", lambda p: (p, garbage)),
    "json box outside the image": ("json", lambda p: (_first_prompt(p, ".json"),
                                                      lambda f: _one_box(f, [300, 200, 900, 700]))),
    "json negative box": ("json", lambda p: (_first_prompt(p, ".json"),
                                             lambda f: _one_box(f, [-5, -5, 10, 10]))),
}
for _name, (_kind, _pick) in PROMPT_DAMAGE.items():
    def _prompt_damage(ws, d, kind=_kind, pick=_pick):
        def damage(prompts):
            target, how = pick(prompts)
            how(target)
            return target
        prompts = ws.batch_input(d, kind)
        target = damage(prompts)
        p = run_cli(ws.batch_args(d, prompts))
        return judge_batch(p, (target.name,), d / "out", ws.reference_batch(kind))
    scenario(f"prompt file {_name}", "bad input" if "box" in _name else "corrupt file",
             fast=_name in ("json truncated", "yolo bit-flipped '.'", "coco truncated"))(
        _prompt_damage)


@scenario("batch --prompts folder missing", "bad input")
def _missing_prompts(ws, d):
    ws.batch_input(d)
    p = run_cli(ws.batch_args(d, d / "no_such_prompts"))
    return classify(p, ("no_such_prompts",), None), _last_line(p)


@scenario("batch one prompt file missing", "bad input")
def _one_prompt_missing(ws, d):
    prompts = ws.batch_input(d)
    _first_prompt(prompts, ".json").unlink()
    p = run_cli(ws.batch_args(d, prompts))
    # exit 0 is right only if the image without prompts is reported, not silently dropped
    return classify(p, ("part_00",), None), _last_line(p)


RECIPE_DAMAGE = {
    "truncated": lambda f: truncate(f, 0.4),
    "bit-flipped '='": lambda f: flip_char(f, "="),
    "garbage": garbage,
    "empty": empty,
    "max_area_mm2 = \"big\"": lambda f: f.write_text(
        f.read_text().replace("max_area_mm2 = 0.5", 'max_area_mm2 = "big"')),
    "mm_per_px = 0": lambda f: f.write_text(f.read_text().replace("mm_per_px = 0.05",
                                                                  "mm_per_px = 0")),
    "mm_per_px = -0.05": lambda f: f.write_text(f.read_text().replace("mm_per_px = 0.05",
                                                                      "mm_per_px = -0.05")),
    "mm_per_px = 1e9": lambda f: f.write_text(f.read_text().replace("mm_per_px = 0.05",
                                                                    "mm_per_px = 1e9")),
}
for _name, _how in RECIPE_DAMAGE.items():
    def _recipe_damage(ws, d, how=_how):
        recipe = d / "recipe.toml"
        shutil.copy(RECIPE, recipe)
        how(recipe)
        prompts = ws.batch_input(d)
        p = run_cli(ws.batch_args(d, prompts, recipe=recipe))
        return judge_batch(p, ("recipe.toml",), d / "out", ws.reference_batch())
    scenario(f"recipe {_name}", "corrupt file" if "=" not in _name or "flip" in _name
             else "bad input", fast=_name == "truncated")(_recipe_damage)


for _value in ("0", "-1", "1e9", "nan"):
    def _mm_per_px(ws, d, value=_value):
        prompts = ws.batch_input(d)
        p = run_cli([*ws.batch_args(d, prompts), f"--mm-per-px={value}"])
        return classify(p, ("--mm-per-px",), None), _last_line(p)
    scenario(f"batch --mm-per-px {_value}", "bad input", fast=_value == "-1")(_mm_per_px)


# ---- the inspection database and the batch ledger
DB_DAMAGE = {
    "truncated": lambda f: truncate(f, 0.3),
    "bit-flipped header": lambda f: flip_bit(f, 3),
    "bit-flipped page": lambda f: flip_bit(f, 0.6, 3),
    "garbage": garbage,
}
for _name, _how in DB_DAMAGE.items():
    def _db_damage(ws, d, how=_how):
        prompts = ws.batch_input(d)
        db = d / "store.db"
        first = run_cli([*ws.batch_args(d, prompts, out=d / "first"), "--db", db])
        assert first.returncode == 0, first.text
        how(db)
        p = run_cli([*ws.batch_args(d, prompts), "--db", db])
        # the rerun's inspections are the first run's (same images and settings): kept once
        return judge_batch(p, ("store.db",), d / "out", ws.reference_batch(), db)
    scenario(f"database {_name}", "corrupt file", fast=_name == "garbage")(_db_damage)


for _name, _how in DB_DAMAGE.items():
    def _db_stats(ws, d, how=_how):
        prompts = ws.batch_input(d)
        first = run_cli(ws.batch_args(d, prompts))
        assert first.returncode == 0, first.text
        db = d / "out" / "inspections.db"
        good = run_cli(["db", "--db", db, "stats"])
        how(db)
        p = run_cli(["db", "--db", db, "stats"])
        return classify(p, ("inspections.db",), lambda: p.stdout == good.stdout), _last_line(p)
    scenario(f"db stats on a database {_name}", "corrupt file")(_db_stats)


LEDGER_DAMAGE = {
    "last line cut (a kill mid-write)": lambda f: f.write_bytes(f.read_bytes()[:-20]),
    "truncated to half": lambda f: truncate(f, 0.5),
    "bit-flipped '{'": lambda f: flip_char(f, "{"),
    "garbage": garbage,
}
for _name, _how in LEDGER_DAMAGE.items():
    def _ledger_damage(ws, d, how=_how):
        prompts = ws.batch_input(d)
        first = run_cli(ws.batch_args(d, prompts))
        assert first.returncode == 0, first.text
        how(d / "out" / "ledger.jsonl")
        p = run_cli(ws.batch_args(d, prompts))
        return judge_batch(p, ("ledger.jsonl",), d / "out", ws.reference_batch())
    scenario(f"ledger {_name}", "corrupt file", fast=_name.startswith("bit"))(_ledger_damage)


# ---- kills at every fault point, then a rerun
def _kill_steps() -> list[tuple[str, int]]:
    try:
        from app.batch import faults
    except ImportError:
        return []
    once = {"after_lock", "after_reports"}
    return [(s, n) for s in faults.STEPS for n in ((1,) if s in once else (1, 2))]


for _step, _n in _kill_steps():
    def _kill(ws, d, step=_step, n=_n):
        prompts = ws.batch_input(d)
        killed = run_cli(ws.batch_args(d, prompts), env={"SAM_INSPECT_FAULT": f"{step}:{n}"})
        if killed.returncode != -9:
            return ("traceback" if "Traceback" in killed.text else "lost",
                    f"the fault point was not reached (exit {killed.returncode}): "
                    + _last_line(killed))
        p = run_cli(ws.batch_args(d, prompts))
        if "Traceback (most recent call last)" in p.text:
            return "traceback", _last_line(p)
        facts, ref = batch_facts(d / "out"), ws.reference_batch()
        if p.returncode == 0 and same_batch(facts, ref):
            return "survived", f"rerun exit 0, results equal ({killed.seconds:.1f} s to kill)"
        diff = [k for k in ("rows", "masks", "stored", "summary") if facts[k] != ref[k]]
        return "lost", f"rerun exit {p.returncode}; differs in {', '.join(diff) or '-'}: " \
            f"stored {facts['stored']}"
    scenario(f"kill at {_step}:{_n}, rerun", "kill",
             fast=(_step, _n) in (("after_storing", 2), ("after_store_commit", 1)))(_kill)


@scenario("kill after_store_commit:2, WAL deleted, rerun", "kill")
def _vanished_wal(ws, d):
    prompts = ws.batch_input(d)
    killed = run_cli(ws.batch_args(d, prompts), env={"SAM_INSPECT_FAULT": "after_store_commit:2"})
    if killed.returncode != -9:
        return "lost", f"fault point not reached (exit {killed.returncode})"
    wal = d / "out" / "inspections.db-wal"
    had = wal.is_file() and wal.stat().st_size > 0
    wal.unlink(missing_ok=True)
    (d / "out" / "inspections.db-shm").unlink(missing_ok=True)
    p = run_cli(ws.batch_args(d, prompts))
    if "Traceback (most recent call last)" in p.text:
        return "traceback", _last_line(p)
    facts, ref = batch_facts(d / "out"), ws.reference_batch()
    if p.returncode == 0 and same_batch(facts, ref):
        return "survived", f"WAL {'had data' if had else 'was empty'}; rerun restored everything"
    if p.returncode != 0 and "inspections.db" in p.text:
        return "clear error", _last_line(p)
    return "lost", f"WAL {'had data' if had else 'was empty'}; rerun exit {p.returncode}, " \
        f"stored {facts['stored']}"


# ---- two writers
@scenario("two batch writers on one --out", "concurrent", fast=True)
def _two_on_out(ws, d):
    prompts = ws.batch_input(d)
    a = run_cli(ws.batch_args(d, prompts), wait=False)
    b = run_cli(ws.batch_args(d, prompts), wait=False)
    outs = [(q.wait(TIMEOUT_S), *q.communicate()) for q in (a, b)]
    texts = [o + e for _, o, e in outs]
    if any("Traceback (most recent call last)" in t for t in texts):
        return "traceback", "; ".join(t.strip().splitlines()[-1] for t in texts if t.strip())
    codes = [rc for rc, _, _ in outs]
    facts, ref = batch_facts(d / "out"), ws.reference_batch()
    if not same_batch(facts, ref):
        return "lost", f"exit codes {codes}; results differ: stored {facts['stored']}"
    refused = [t for rc, t in zip(codes, texts, strict=True) if rc != 0]
    if refused and all("out" in t.lower() for t in refused):
        return "clear error", f"exit codes {codes}; the second writer: " + \
            refused[0].strip().splitlines()[-1][:200]
    return "recovered", f"exit codes {codes}; results equal (the writers took turns)"


@scenario("two batch writers on one --db", "concurrent")
def _two_on_db(ws, d):
    prompts = ws.batch_input(d)
    db = d / "shared.db"
    procs = [run_cli([*ws.batch_args(d, prompts, out=d / f"out{i}"), "--db", db], wait=False)
             for i in (1, 2)]
    outs = [(q.wait(TIMEOUT_S), *q.communicate()) for q in procs]
    texts = [o + e for _, o, e in outs]
    if any("Traceback (most recent call last)" in t for t in texts):
        return "traceback", "; ".join(t.strip().splitlines()[-1] for t in texts if t.strip())
    codes = [rc for rc, _, _ in outs]
    ref = ws.reference_batch()
    stored = db_counts(db)
    # the same images under the same settings are the same inspections: the store keeps each
    # once (the second writer finds the first one's under the same ledger key)
    want = ref["stored"] or {}
    both = all(same_batch({**batch_facts(d / f"out{i}", db), "stored": ref["stored"]}, ref)
               for i in (1, 2))
    if codes == [0, 0] and stored == want and both:
        return "recovered", "both runs complete, each inspection stored once"
    if any(c != 0 for c in codes) and all("shared.db" in t for c, t in
                                          zip(codes, texts, strict=True) if c):
        return "clear error", f"exit codes {codes}"
    return "silent wrong" if codes == [0, 0] else "lost", f"exit codes {codes}, stored {stored}"


# ---- checkpoints and the embedding cache (random MobileSAM vit_t)
def _vit_t_checkpoint(ws: Workspace) -> Path:
    """A random vit_t state dict with its PATH.sha256 sidecar (made once)."""
    path = ws.root / "models" / "vit_t_random.pth"
    if not path.is_file():
        import hashlib

        import torch

        from tests.sam_factory import random_vit_t

        path.parent.mkdir(parents=True, exist_ok=True)
        torch.save(random_vit_t(seed=1).state_dict(), path)
        digest = hashlib.sha256(path.read_bytes()).hexdigest()
        path.with_name(path.name + ".sha256").write_text(f"{digest}  {path.name}\n")
    return path


def _sam_args(ckpt: Path) -> list:
    return ["--engine", "sam", "--model", "vit_t", "--checkpoint", ckpt]


CKPT_DAMAGE = {**DAMAGE, "bit-flipped in the weights": lambda f: flip_bit(f, 0.7, 2),
               "sha256 sidecar deleted": None}
for _name in CKPT_DAMAGE:
    def _ckpt_damage(ws, d, name=_name):
        good = _vit_t_checkpoint(ws)
        ckpt = d / "vit_t_random.pth"
        shutil.copy(good, ckpt)
        side = good.with_name(good.name + ".sha256")
        if name == "sha256 sidecar deleted":
            pass  # a custom checkpoint with no recorded hash: it cannot be verified
        else:
            shutil.copy(side, ckpt.with_name(side.name))
            CKPT_DAMAGE[name](ckpt)
        env = {"SAM_INSPECT_CACHE": str(d / "cache")}
        img, box = ws.part_image(d)
        p = run_cli(["segment", img, "--box", box, "--out", d / "out", *_sam_args(ckpt)],
                    env=env)
        ref_env = {"SAM_INSPECT_CACHE": str(ws.root / "ref_cache")}
        ref = ws.reference_segment(".png", tuple(map(str, _sam_args(good))), env=ref_env)
        return classify(p, (ckpt.name,), lambda: ws.segment_mask(d / "out") == ref), \
            _last_line(p)
    scenario(f"checkpoint {_name}", "corrupt file", needs=("torch", "mobile_sam"))(_ckpt_damage)


for _name in ("truncated", "bit-flipped", "garbage", "empty"):
    def _cache_damage(ws, d, name=_name):
        ckpt = _vit_t_checkpoint(ws)
        env = {"SAM_INSPECT_CACHE": str(d / "cache")}
        img, box = ws.part_image(d)
        args = ["segment", img, "--box", box, "--out", d / "out", *_sam_args(ckpt)]
        first = run_cli(args, env=env)
        assert first.returncode == 0, first.text
        files = [f for f in (d / "cache").rglob("*") if f.is_file()]
        if not files:
            return "vague error", "no embedding cache file was written"
        for f in files:
            DAMAGE[name](f)
        ref = ws.segment_mask(d / "out")
        (d / "out" / "part_mask.png").unlink()
        p = run_cli(args, env=env)
        return classify(p, (files[0].name, "cache"), lambda: ws.segment_mask(d / "out") == ref), \
            _last_line(p) + f" ({len(files)} cache file(s) damaged)"
    scenario(f"embedding cache {_name}", "corrupt file", needs=("torch", "mobile_sam"))(
        _cache_damage)


@scenario("checkpoint file missing", "bad input")
def _ckpt_missing(ws, d):
    img, box = ws.part_image(d)
    p = run_cli(["segment", img, "--box", box, "--out", d / "out",
                 *_sam_args(d / "no_such.pth")])
    return classify(p, ("no_such.pth",), None), _last_line(p)


# ---- ONNX exports (tiny random SAM) through sam-inspect-line
def _onnx_export(ws: Workspace) -> Path:
    out = ws.root / "onnx_export"
    if not (out / "manifest.json").is_file():
        from sam_engine.onnx.export import ExportOptions, export_onnx
        from tests.sam_factory import tiny_sam

        export_onnx(tiny_sam(3), "tiny", out, checkpoint_sha256="0" * 64,
                    options=ExportOptions(encoder=True, quantize=False, verify_cases=2))
    return out


def _line(ws: Workspace, d: Path, models: Path) -> Proc:
    img, box = ws.part_image(d)
    return run_cli([img, "--models", models, "--box", box, "--out", d / "out"],
                   module="app.shell.line_main")


def _onnx_files(models: Path) -> list[str]:
    return sorted(p.name for p in models.glob("*.onnx"))


def _onnx_reference(ws: Workspace) -> bytes | None:
    if "onnx" not in ws._refs:
        d = ws.fresh("ref_onnx")
        p = _line(ws, d, _onnx_export(ws))
        assert p.returncode == 0, p.text
        ws._refs["onnx"] = ws.segment_mask(d / "out")
    return ws._refs["onnx"]


def _onnx_targets() -> list[str]:
    return ["manifest.json", "encoder", "decoder"]


@scenario("onnx manifest.json deleted", "corrupt file", needs=("onnx", "onnxruntime"))
def _onnx_no_manifest(ws, d):
    models = d / "models"
    shutil.copytree(_onnx_export(ws), models)
    (models / "manifest.json").unlink()
    p = _line(ws, d, models)
    return classify(p, ("manifest.json",), None), _last_line(p)


for _target in _onnx_targets():
    for _how in ("truncated", "bit-flipped", "garbage"):
        def _onnx_damage(ws, d, target=_target, how=_how):
            models = d / "models"
            shutil.copytree(_onnx_export(ws), models)
            if target == "manifest.json":
                victim = models / "manifest.json"
            else:
                victim = models / next(n for n in _onnx_files(models) if target in n
                                       and "int8" not in n)
            DAMAGE[how](victim)
            p = _line(ws, d, models)
            ref = _onnx_reference(ws)
            return classify(p, (victim.name,), lambda: ws.segment_mask(d / "out") == ref), \
                _last_line(p) + f" [{victim.name}]"
        scenario(f"onnx {_target} {_how}", "corrupt file", needs=("onnx", "onnxruntime"))(
            _onnx_damage)


# ------------------------------------------------------------------------------ running it all
def available(s: Scenario) -> bool:
    import importlib.util

    return all(importlib.util.find_spec(m) is not None for m in s.needs)


def run_scenario(ws: Workspace, s: Scenario) -> Result:
    t0 = time.perf_counter()
    d = ws.fresh(s.name)
    try:
        outcome, detail = s.fn(ws, d)
    except Exception as exc:  # the harness's own failure is reported, not hidden
        outcome, detail = "traceback", f"harness: {type(exc).__name__}: {exc}"[:300]
    detail = detail.replace(str(d) + os.sep, "").replace(str(ws.root) + os.sep, "")
    return Result(s.name, s.group, outcome, round(time.perf_counter() - t0, 2), detail)


def totals(results: list[Result]) -> dict:
    c = Counter(r.outcome for r in results)
    kills = [r for r in results if r.group == "kill"]
    bad = [r for r in results if r.group != "kill"]
    return {
        "scenarios": len(results),
        "kills": len(kills),
        "kills_survived": sum(r.outcome == "survived" for r in kills),
        "results_lost": sum(r.outcome == "lost" for r in results),
        "bad_inputs_tried": len(bad),
        "clear_errors": c["clear error"],
        "recovered": c["recovered"],
        "vague_errors": c["vague error"],
        "tracebacks": c["traceback"],
        "silent_wrong": c["silent wrong"],
        "outcomes": dict(c),
    }


def format_table(results: list[Result]) -> str:
    w = max(len(r.name) for r in results)
    lines = [f"{'scenario':<{w}}  {'group':<12}  {'outcome':<12}  detail"]
    for r in results:
        lines.append(f"{r.name:<{w}}  {r.group:<12}  {r.outcome:<12}  {r.detail}")
    t = totals(results)
    lines.append("")
    lines.append(
        f"kills survived {t['kills_survived']}/{t['kills']}, results lost {t['results_lost']}, "
        f"bad inputs tried {t['bad_inputs_tried']}: clear errors {t['clear_errors']}, "
        f"recovered {t['recovered']}, vague errors {t['vague_errors']}, "
        f"tracebacks {t['tracebacks']}, silent wrong {t['silent_wrong']}")
    return "\n".join(lines)


def markdown(results: list[Result]) -> str:
    """The README's figures: totals, then per group the count of each outcome, then every
    scenario that is not a clear error, a recovery or a survived kill."""
    t = totals(results)
    lines = [
        "| kills survived | results lost | bad inputs tried | clear errors | recovered | "
        "vague errors | tracebacks | silent wrong |",
        "|---|---|---|---|---|---|---|---|",
        f"| {t['kills_survived']}/{t['kills']} | {t['results_lost']} | {t['bad_inputs_tried']} | "
        f"{t['clear_errors']} | {t['recovered']} | {t['vague_errors']} | {t['tracebacks']} | "
        f"{t['silent_wrong']} |",
        "",
        "| group | scenarios | " + " | ".join(OUTCOMES) + " |",
        "|---|---|" + "---|" * len(OUTCOMES),
    ]
    for g in dict.fromkeys(r.group for r in results):
        c = Counter(r.outcome for r in results if r.group == g)
        lines.append(f"| {g} | {sum(c.values())} | " + " | ".join(str(c[o]) for o in OUTCOMES)
                     + " |")
    odd = [r for r in results if r.outcome in BAD]
    if odd:
        lines += ["", "| scenario | outcome | detail |", "|---|---|---|"]
        lines += [f"| {r.name} | {r.outcome} | {r.detail.replace('|', '/')} |" for r in odd]
    return "\n".join(lines) + "\n"


def main(argv: list[str] | None = None) -> int:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--only", action="append", default=[], metavar="SUBSTR",
                    help="run the scenarios whose name contains SUBSTR (repeatable)")
    ap.add_argument("--fast", action="store_true", help="only the fast subset (the tests')")
    ap.add_argument("--list", action="store_true", help="list the scenarios and exit")
    ap.add_argument("--json", type=Path, default=REPO / "benchmarks" / "results" /
                    "fault_injection.json")
    ap.add_argument("--markdown", type=Path, help="also write the README table here")
    ap.add_argument("--keep", action="store_true", help="keep the work folder")
    args = ap.parse_args(argv)
    chosen = [s for s in SCENARIOS if (not args.only or any(o in s.name for o in args.only))
              and (not args.fast or s.fast)]
    if args.list:
        for s in chosen:
            print(f"{s.group:<12} {'fast' if s.fast else '    '} {s.name}")
        return 0
    root = Path(tempfile.mkdtemp(prefix="sam_fault_injection_"))
    ws = Workspace(root)
    results = []
    try:
        for s in chosen:
            if not available(s):
                print(f"skipped (needs {', '.join(s.needs)}): {s.name}", file=sys.stderr)
                continue
            r = run_scenario(ws, s)
            print(f"{r.outcome:<12} {r.seconds:6.1f} s  {r.name}: {r.detail}", file=sys.stderr,
                  flush=True)
            results.append(r)
    finally:
        if not args.keep:
            shutil.rmtree(root, ignore_errors=True)
        else:
            print(f"work folder kept: {root}", file=sys.stderr)
    print(format_table(results))
    if args.json is not None and results:
        args.json.parent.mkdir(parents=True, exist_ok=True)
        args.json.write_text(json.dumps({"totals": totals(results),
                                         "results": [asdict(r) for r in results]}, indent=2)
                             + "\n")
        print(f"wrote {args.json}")
    if args.markdown is not None and results:
        args.markdown.write_text(markdown(results))
        print(f"wrote {args.markdown}")
    return 0


if __name__ == "__main__":
    sys.exit(main())
