"""Build a desktop bundle: `python packaging/desktop/build.py lite|full` (`make package-lite`).

Runs PyInstaller on lite.spec / full.spec (one-folder bundle in DIST/sam-inspect-FLAVOUR), then
writes beside the executable: ABOUT.json and LICENSES.txt (version, git hash, every bundled
component's licence, from this environment's package metadata; the same two are recorded inside
the bundle for the About dialog), an empty models/ folder with a README, and the Linux desktop
entry with its icon and installer script. A lite bundle that contains torch fails the build.
"""

from __future__ import annotations

import argparse
import datetime as dt
import importlib.metadata as metadata
import json
import shutil
import subprocess
import sys
from pathlib import Path

HERE = Path(__file__).resolve().parent
ROOT = HERE.parents[1]
sys.path.insert(0, str(ROOT))

from app.shell.about import licences_text, live_about_info, write_about_files  # noqa: E402

FORBIDDEN_IN_LITE = ("torch", "torchvision", "segment_anything", "transformers", "ray")
MODELS_README = """\
Put SAM models here (this folder is searched before the per-user folder; nothing inside the
_internal folder is ever searched):

  models/vit_b/            an ONNX export: the folder written by
                           `sam-inspect export-onnx --model vit_b --out vit_b --encoder`
                           (manifest.json, encoder.onnx, image_terms.onnx, decoder_*.onnx)
  models/sam_vit_b_01ec64.pth   a checkpoint (full bundle only)

Per-user alternative: {user}
Check with: sam-inspect --self-test
SAM weights are licensed under Apache-2.0 (see LICENSES.txt).
"""


def run_pyinstaller(flavour: str, dist: Path, work: Path, clean: bool) -> Path:
    cmd = [sys.executable, "-m", "PyInstaller", "--noconfirm", "--log-level", "WARN",
           "--distpath", str(dist), "--workpath", str(work), str(HERE / f"{flavour}.spec")]
    if clean:
        cmd.insert(3, "--clean")
    print("+", " ".join(cmd), flush=True)
    subprocess.run(cmd, check=True, cwd=ROOT)
    return dist / f"sam-inspect-{flavour}"


def bundled_distributions(work: Path, flavour: str) -> list[str]:
    """Distributions whose top-level modules the spec's Analysis put into the bundle."""
    tops = json.loads((work / flavour / "bundle_modules.json").read_text(encoding="utf-8"))
    owners = metadata.packages_distributions()
    return sorted({d for t in tops for d in owners.get(t, ())})


def internal_dir(bundle: Path) -> Path:
    return bundle / "_internal"


def check_lite(bundle: Path) -> None:
    internal = internal_dir(bundle)
    bad = [n for n in FORBIDDEN_IN_LITE if (internal / n).exists()]
    if bad:
        raise SystemExit(f"lite bundle {bundle} contains {', '.join(bad)}; check the spec's "
                         "excludes")


def write_extras(bundle: Path, flavour: str, dists: list[str]) -> None:
    from app.shell.paths import user_models_dir

    info = live_about_info(flavour, distributions=dists, built=dt.date.today().isoformat())
    licences = licences_text(info)
    write_about_files(bundle, info, licences)
    app_dir = internal_dir(bundle) / "app" / "shell"
    (app_dir / "_bundle_about.json").write_text(json.dumps(info.to_dict(), indent=2) + "\n",
                                                 encoding="utf-8")
    (app_dir / "_bundle_licences.txt").write_text(licences, encoding="utf-8")
    models = bundle / "models"
    models.mkdir(exist_ok=True)
    (models / "README.txt").write_text(MODELS_README.format(user=user_models_dir()),
                                       encoding="utf-8")
    for name in ("icon.png", "icon.svg", "sam-inspect.desktop", "install-desktop-entry.sh"):
        shutil.copy2(HERE / name, bundle / name)
    (bundle / "install-desktop-entry.sh").chmod(0o755)


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("flavour", choices=("lite", "full"))
    parser.add_argument("--dist", type=Path, default=ROOT / "dist", help="default: dist/")
    parser.add_argument("--work", type=Path, default=ROOT / "build" / "pyinstaller",
                        help="PyInstaller's work folder (kept between builds: faster rebuilds)")
    parser.add_argument("--clean", action="store_true", help="empty PyInstaller's caches first")
    args = parser.parse_args(argv)
    bundle = run_pyinstaller(args.flavour, args.dist.resolve(), args.work.resolve(), args.clean)
    if args.flavour == "lite":
        check_lite(bundle)
    dists = bundled_distributions(args.work.resolve(), args.flavour)
    write_extras(bundle, args.flavour, dists)
    size = sum(p.stat().st_size for p in bundle.rglob("*") if p.is_file() and not p.is_symlink())
    print(f"built {bundle} ({size / 2**20:.0f} MiB, {len(dists)} distributions); "
          f"check it with: {bundle / 'sam-inspect'} --self-test")
    return 0


if __name__ == "__main__":
    sys.exit(main())
