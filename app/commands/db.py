"""`sam-inspect db export|stats`: export the inspection database and show defect rates."""

from __future__ import annotations

import argparse
import sys
from pathlib import Path

from app.store import InspectionStore, StoreError, export_coco, export_csv

DEFAULT_DB = Path("results") / "inspections.db"


def add_parser(sub: argparse._SubParsersAction) -> None:
    p = sub.add_parser("db", help="export the inspection database, defect statistics")
    p.set_defaults(func=run)
    p.add_argument(
        "--db",
        default=str(DEFAULT_DB),
        metavar="URL_OR_PATH",
        help=f"SQLAlchemy URL or SQLite file (default: {DEFAULT_DB})",
    )
    dsub = p.add_subparsers(dest="db_command", metavar="ACTION", required=True)

    ex = dsub.add_parser("export", help="export inspections as CSV (one row per defect) or COCO")
    ex.add_argument("--format", choices=("csv", "coco"), default="csv")
    ex.add_argument("--lot", help="only this lot")
    ex.add_argument(
        "-o", "--output", type=Path, help="output file (default: stdout for csv; required for coco)"
    )

    st = dsub.add_parser("stats", help="defect rate per class per lot")
    st.add_argument("--lot", help="only this lot")


def _open(args: argparse.Namespace) -> InspectionStore:
    db = str(args.db)
    if "://" not in db and not Path(db).is_file():
        raise StoreError(f"no database at {db}; give --db PATH or URL")
    return InspectionStore(db)


def run(args: argparse.Namespace) -> int:
    with _open(args) as store:
        if args.db_command == "export":
            return _export(store, args)
        return _stats(store, args)


def _export(store: InspectionStore, args: argparse.Namespace) -> int:
    if args.format == "coco":
        if args.output is None:
            print("sam-inspect: error: --format coco needs -o FILE.json", file=sys.stderr)
            return 2
        data = export_coco(store, args.output, lot=args.lot)
        print(
            f"wrote {len(data['images'])} images, {len(data['annotations'])} annotations "
            f"to {args.output}",
            file=sys.stderr,
        )
        return 0
    if args.output is None:
        export_csv(store, sys.stdout, lot=args.lot)
        return 0
    with open(args.output, "w", newline="", encoding="utf-8") as fh:
        n = export_csv(store, fh, lot=args.lot)
    print(f"wrote {n} rows to {args.output}", file=sys.stderr)
    return 0


def _stats(store: InspectionStore, args: argparse.Namespace) -> int:
    rates = [r for r in store.defect_rates() if args.lot is None or r.lot == args.lot]
    print(f"{store.count_inspections()} inspections in {store.url}")
    if not rates:
        print("no defects recorded")
        return 0
    w_lot = max(3, *(len(r.lot) for r in rates))
    w_cls = max(5, *(len(r.defect_class) for r in rates))
    print(
        f"{'lot':<{w_lot}}  {'class':<{w_cls}}  {'images':>6}  {'with':>6}  {'rate':>7}  "
        f"{'defects':>7}"
    )
    for r in rates:
        print(
            f"{r.lot:<{w_lot}}  {r.defect_class:<{w_cls}}  {r.inspections:>6}  "
            f"{r.inspections_with_class:>6}  {r.rate:>7.1%}  {r.defects:>7}"
        )
    return 0
