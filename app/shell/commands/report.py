"""`sam-inspect report`: write, train and evaluate inspection reports.

    sam-inspect report FINDINGS.json --out report.pdf [--base DIR [--adapter DIR]]
    sam-inspect report build-data --out pairs.jsonl [--seeds SEEDS.jsonl] [--n 500]
    sam-inspect report train --data pairs.jsonl --base DIR --out ADAPTER_DIR
    sam-inspect report eval --data held_out.jsonl --base DIR [--adapter DIR]
"""

from __future__ import annotations

import argparse
import errno
import json
import sys
from pathlib import Path

SUBCOMMANDS = ("generate", "train", "build-data", "eval")


def add_parser(sub: argparse._SubParsersAction) -> None:
    p = sub.add_parser(
        "report", help="inspection reports (template or Llama + LoRA, fact-checked)",
        description="Write the report of an inspection (FINDINGS: Inspection JSON) as Markdown, "
        "HTML or PDF; or build training data, train a LoRA adapter, evaluate a model. "
        f"Actions: {', '.join(SUBCOMMANDS)} (default generate).")
    p.set_defaults(func=run)
    p.add_argument("args", nargs=argparse.REMAINDER, help="generate arguments or an action")


def _generate_parser() -> argparse.ArgumentParser:
    from app.report.template import STYLES

    g = argparse.ArgumentParser(prog="sam-inspect report [generate]")
    g.add_argument("findings", type=Path, help="Inspection JSON (Inspection.to_dict)")
    g.add_argument("--out", type=Path, required=True,
                   help="report file: .md, .html or .pdf (format from the suffix)")
    g.add_argument("--format", choices=("md", "html", "pdf"), help="override the suffix")
    g.add_argument("--base", type=Path, help="local Llama model folder (default: template only)")
    g.add_argument("--adapter", type=Path, help="LoRA adapter folder (PEFT)")
    g.add_argument("--style", choices=STYLES, help="template style (default: the adapter's, "
                   "else en)")
    g.add_argument("--recipe", type=Path, help="recipe TOML: adds each class's limits")
    g.add_argument("--approver", default="", help="who approves the report")
    g.add_argument("--images", type=Path, help="folder image paths are relative to (default: "
                   "the findings file's folder)")
    g.add_argument("--device", help="cpu or cuda (default: cuda when present)")
    return g


def _train_parser() -> argparse.ArgumentParser:
    t = argparse.ArgumentParser(prog="sam-inspect report train")
    t.add_argument("--data", type=Path, required=True, help="pairs JSONL (report build-data)")
    t.add_argument("--base", type=Path, required=True, help="local Llama model folder")
    t.add_argument("--out", type=Path, required=True, help="adapter folder to write")
    t.add_argument("--r", type=int, default=16)
    t.add_argument("--alpha", type=int, default=32)
    t.add_argument("--dropout", type=float, default=0.05)
    t.add_argument("--target", default="q_proj,v_proj",
                   help="comma-separated module names, or all-linear")
    t.add_argument("--lr", type=float, default=3e-4)
    t.add_argument("--epochs", type=int, default=3)
    t.add_argument("--batch-size", type=int, default=8)
    t.add_argument("--grad-accum", type=int, default=2)
    t.add_argument("--val-fraction", type=float, default=0.1)
    t.add_argument("--eval-every", type=int, default=20, help="optimizer steps per val check")
    t.add_argument("--patience", type=int, default=3, help="val checks without improvement")
    t.add_argument("--max-steps", type=int)
    t.add_argument("--seed", type=int, default=0)
    t.add_argument("--device")
    return t


def _data_parser() -> argparse.ArgumentParser:
    from app.report.template import STYLES

    d = argparse.ArgumentParser(prog="sam-inspect report build-data")
    d.add_argument("--out", type=Path, required=True, help="pairs JSONL to write")
    d.add_argument("--seeds", type=Path, help="seed pairs JSONL written by people")
    d.add_argument("--n", type=int, default=500, help="pairs per style")
    d.add_argument("--style", action="append", choices=STYLES,
                   help="report style(s) (repeatable; default en)")
    d.add_argument("--recipe", type=Path, help="recipe for classes and verdicts (default: demo)")
    d.add_argument("--threshold", type=float, default=0.7, help="ROUGE-L near-duplicate limit")
    d.add_argument("--paraphrase-base", type=Path,
                   help="a Llama folder that also writes candidate reports (fact-checked)")
    d.add_argument("--paraphrase-adapter", type=Path)
    d.add_argument("--seed", type=int, default=0)
    return d


def _eval_parser() -> argparse.ArgumentParser:
    e = argparse.ArgumentParser(prog="sam-inspect report eval")
    e.add_argument("--data", type=Path, required=True, help="held-out pairs JSONL")
    e.add_argument("--base", type=Path, required=True)
    e.add_argument("--adapter", type=Path)
    e.add_argument("--limit", type=int, help="only the first N pairs")
    e.add_argument("--json", type=Path, help="also write the figures here")
    e.add_argument("--device")
    return e


def run(args: argparse.Namespace) -> int:
    rest = list(args.args)
    action = rest.pop(0) if rest and rest[0] in SUBCOMMANDS else "generate"
    if action == "train":
        return _train(_train_parser().parse_args(rest))
    if action == "build-data":
        return _build_data(_data_parser().parse_args(rest))
    if action == "eval":
        return _eval(_eval_parser().parse_args(rest))
    return _generate(_generate_parser().parse_args(rest))


def _generate(a: argparse.Namespace) -> int:
    from app.inspection.findings import Inspection
    from app.report import write_report
    from app.report.llama import ReportModelError, load_writer

    if not a.findings.is_file():
        print(f"sam-inspect: error: {a.findings}: no such findings file", file=sys.stderr)
        return 2
    try:
        inspection = Inspection.from_dict(json.loads(a.findings.read_text(encoding="utf-8")))
    except (ValueError, KeyError, TypeError) as exc:
        print(f"sam-inspect: error: {a.findings}: not an inspection JSON ({exc})",
              file=sys.stderr)
        return 2
    recipe = None
    if a.recipe:
        from app.inspection.recipe import load_recipe

        recipe = load_recipe(a.recipe)
    writer, model_error = None, ""
    if a.base is not None:
        try:
            writer = load_writer(a.base, a.adapter, a.device)
        except ReportModelError as exc:
            model_error = f"report model not available: {exc}"
            print(f"warning: {exc}\nwarning: falling back to the template report",
                  file=sys.stderr)
    try:
        report = write_report(inspection, a.out, fmt=a.format, recipe=recipe, writer=writer,
                              style=a.style, approver=a.approver,
                              image_root=str(a.images or a.findings.parent),
                              model_error=model_error)
    except OSError as exc:  # a full disk, a read-only folder: say which file, no traceback
        why = ("the disk is full; free space and run again" if exc.errno == errno.ENOSPC
               else f"{exc.strerror or exc}; choose a writable --out")
        print(f"sam-inspect: error: {a.out}: report not written: {why}", file=sys.stderr)
        return 2
    nar = report.narrative
    print(f"report {report.facts.report_id}: {a.out} ({nar.status})")
    print(f"  {nar.note}")
    return 0


def _train(a: argparse.Namespace) -> int:
    from app.report.llama import ReportModelError
    from app.report.train import TrainSettings, train_adapter

    targets = a.target if a.target == "all-linear" else tuple(a.target.split(","))
    settings = TrainSettings(r=a.r, alpha=a.alpha, dropout=a.dropout, target_modules=targets,
                             lr=a.lr, epochs=a.epochs, batch_size=a.batch_size,
                             grad_accum=a.grad_accum, val_fraction=a.val_fraction,
                             eval_every=a.eval_every, patience=a.patience,
                             max_steps=a.max_steps, seed=a.seed)
    try:
        res = train_adapter(a.data, a.base, a.out, settings, a.device)
    except (ReportModelError, FileNotFoundError, ValueError) as exc:
        print(f"sam-inspect: error: {exc}", file=sys.stderr)
        return 2
    stop = " (early stop)" if res.stopped_early else ""
    print(f"{res.steps} steps{stop}, validation loss {res.initial_val_loss:.3f} -> "
          f"{res.best_val_loss:.3f}, {res.seconds:.0f} s; adapter written to {a.out}")
    return 0


def _build_data(a: argparse.Namespace) -> int:
    from app.inspection.recipe import load_recipe
    from app.report.data_builder import build_pairs, read_pairs, write_pairs

    recipe = load_recipe(a.recipe) if a.recipe else None
    seeds = read_pairs(a.seeds) if a.seeds else None
    paraphraser = None
    if a.paraphrase_base:
        from app.report.llama import load_writer

        writer = load_writer(a.paraphrase_base, a.paraphrase_adapter)

        def paraphraser(facts, style):
            return writer.write(facts).text

    pairs, stats = build_pairs(a.n, a.style or ("en",), seeds=seeds, recipe=recipe,
                               seed=a.seed, threshold=a.threshold, paraphraser=paraphraser)
    write_pairs(a.out, pairs)
    print(f"{stats.describe()}\nwritten to {a.out}")
    return 0


def _eval(a: argparse.Namespace) -> int:
    from app.outputs import atomic_write
    from app.report.data_builder import read_pairs
    from app.report.evaluate import evaluate_writer
    from app.report.llama import ReportModelError, load_writer

    try:
        pairs = read_pairs(a.data)[: a.limit]
        writer = load_writer(a.base, a.adapter, a.device)
    except (ReportModelError, FileNotFoundError, ValueError) as exc:
        print(f"sam-inspect: error: {exc}", file=sys.stderr)
        return 2
    res = evaluate_writer(writer, pairs)
    print(f"{writer.description}: {res.describe()}")
    if a.json:
        atomic_write.write_text(a.json, json.dumps(res.to_dict(), indent=2) + "\n")
    return 0
