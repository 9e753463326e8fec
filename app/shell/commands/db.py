"""`sam-inspect db export|stats|upgrade`: export the inspection database, show defect rates,
bring its schema to this version.

export and stats only read: they open the database read-only, check every page first (a damaged
file is an error naming it, before any output file is made) and never migrate it, since older
sam-inspect versions cannot open an upgraded database; `db upgrade` does that, and says so."""

from __future__ import annotations

import argparse
import sys
from pathlib import Path

from app.store import InspectionStore, StoreError, export_coco, export_csv
from app.store.export import export_csv_file
from app.store.migrate import head_revision

DEFAULT_DB = Path("results") / "inspections.db"


def add_parser(sub: argparse._SubParsersAction) -> None:
    p = sub.add_parser("db", help="export the inspection database, defect statistics, upgrade",
                       description="export and stats only read the database; a database "
                       "from an older sam-inspect needs `sam-inspect db upgrade` first")
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
    ex.add_argument("--root", type=Path, help="coco: image file names relative to this folder "
                    "(default: the images' common folder)")
    ex.add_argument("--polygons", action="store_true", help="coco: polygon masks instead of RLE "
                    "(for tools that read only polygons, e.g. Label Studio; holes are filled)")
    ex.add_argument("--recipe", type=Path, help="coco: category ids in this recipe's class "
                    "order (default: class names sorted)")

    st = dsub.add_parser("stats", help="defect rate per class per lot")
    st.add_argument("--lot", help="only this lot")

    dsub.add_parser("upgrade", help="bring the database's schema to this sam-inspect version "
                    "(older versions cannot open it afterwards; back it up first)")


def _open(args: argparse.Namespace, *, readonly: bool = True) -> InspectionStore:
    db = str(args.db)
    if "://" not in db and not Path(db).is_file():
        raise StoreError(f"no database at {db}; give --db PATH or URL")
    return InspectionStore(db, readonly=readonly)


def run(args: argparse.Namespace) -> int:
    if args.db_command == "upgrade":
        return _upgrade(args)
    with _open(args) as store:
        store.check_integrity()  # before any output file exists
        if args.db_command == "export":
            return _export(store, args)
        return _stats(store, args)


def _upgrade(args: argparse.Namespace) -> int:
    with _open(args, readonly=False) as store:
        change = store.schema_change
        if change is None:
            print(f"database {store.name} already has the newest schema (revision "
                  f"{head_revision()})")
        else:
            print(f"upgraded database {store.name} from schema revision "
                  f"{change.before or '(none)'} to {change.after}")
    return 0


def _export(store: InspectionStore, args: argparse.Namespace) -> int:
    if args.format == "coco":
        if args.output is None:
            print("sam-inspect: error: --format coco needs -o FILE.json", file=sys.stderr)
            return 2
        order = ()
        if args.recipe is not None:
            from app.inspection.recipe import load_recipe

            order = load_recipe(args.recipe).class_names
        data = export_coco(store, args.output, lot=args.lot, root=args.root, class_order=order,
                           polygons=args.polygons)
        print(
            f"wrote {len(data['images'])} images, {len(data['annotations'])} annotations "
            f"to {args.output}",
            file=sys.stderr,
        )
        return 0
    if args.output is None:
        export_csv(store, sys.stdout, lot=args.lot)
        return 0
    n = export_csv_file(store, args.output, lot=args.lot)
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
