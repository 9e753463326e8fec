"""Version, git hash and the licences of bundled components, for the About dialog and the files
written beside a desktop bundle (ABOUT.json, LICENSES.txt).

From a source checkout everything is read live (package metadata, `git rev-parse`). In a
frozen bundle git and most package metadata are absent, so packaging/desktop/build.py records
both at build time in `_bundle_about.json` / `_bundle_licences.txt` next to this module inside
the bundle, and about_info() / licences_text() return those. Nothing here imports torch.
"""

from __future__ import annotations

import importlib.metadata as metadata
import importlib.util
import json
import platform
import re
import subprocess
import sys
from collections.abc import Iterable
from dataclasses import asdict, dataclass, field
from pathlib import Path

from app import __version__

APP_NAME = "sam-inspect"
APP_LICENCE = "Apache-2.0"
BUNDLE_ABOUT = Path(__file__).with_name("_bundle_about.json")
BUNDLE_LICENCES = Path(__file__).with_name("_bundle_licences.txt")
BUNDLE_FLAVOUR = Path(__file__).with_name("_bundle_flavour.txt")  # written by the spec
REPO_ROOT = Path(__file__).resolve().parents[2]
LICENCE_TEXTS_DIR = REPO_ROOT / "packaging" / "desktop" / "licenses"

QT_NOTICE = (
    "Qt and Qt for Python (PySide6, shiboken6) are used under the GNU Lesser General Public "
    "License v3 (LGPL-3.0). They are not modified and are shipped as separate shared libraries "
    "(the bundle's _internal/PySide6 and _internal/shiboken6 folders): you may replace them with "
    "your own build of the same Qt version. Their source code is available from "
    "https://download.qt.io/official_releases/QtForPython/ and https://code.qt.io/. The LGPL-3.0 "
    "text, and the GPL-3.0 text it refers to, are included below."
)
SAM_NOTICE = (
    "Segment Anything (SAM) model weights and code by Meta AI are licensed under the Apache "
    "License 2.0 (https://github.com/facebookresearch/segment-anything); MobileSAM weights "
    "likewise (https://github.com/ChaoningZhang/MobileSAM). Weights are not part of the bundle: "
    "they are installed separately, and their licence applies to them and to ONNX exports made "
    "from them."
)


@dataclass(frozen=True)
class Component:
    """One third-party (or own) component and its licence."""

    name: str
    version: str | None
    licence: str
    url: str = ""
    note: str = ""
    distribution: str = ""  # the Python distribution it comes from (its licence files)


@dataclass(frozen=True)
class AboutInfo:
    """What the About dialog shows."""

    name: str
    version: str
    git_hash: str | None
    flavour: str  # "lite" / "full" bundle, or "source"
    built: str | None  # ISO date of the bundle build
    python: str
    qt: str | None
    torch: str | None
    onnxruntime: str | None
    numpy: str | None
    opencv: str | None
    components: tuple[Component, ...] = field(default_factory=tuple)

    def to_dict(self) -> dict:
        return asdict(self)

    @classmethod
    def from_dict(cls, data: dict) -> AboutInfo:
        comps = tuple(Component(**c) for c in data.get("components", ()))
        return cls(**{**data, "components": comps})

    def summary(self) -> str:
        """A few lines for the About dialog's header."""
        rev = self.git_hash or "unknown"
        built = f", built {self.built}" if self.built else ""
        lines = [
            f"{self.name} {self.version} ({self.flavour}{built}), git {rev}",
            f"Licence: {APP_LICENCE}",
            f"Python {self.python}",
        ]
        for label, v in (("Qt", self.qt), ("PyTorch", self.torch),
                         ("onnxruntime", self.onnxruntime), ("NumPy", self.numpy),
                         ("OpenCV", self.opencv)):
            lines.append(f"{label} {v}" if v else f"{label}: not included")
        return "\n".join(lines)


# (distribution, display name, fallback licence, url, note): the components worth naming even
# when their metadata has no licence field; others found in a bundle are appended.
KEY_COMPONENTS: tuple[tuple[str, str, str, str, str], ...] = (
    ("PySide6_Essentials", "Qt / PySide6", "LGPL-3.0-only", "https://www.qt.io/qt-for-python",
     "dynamically linked, replaceable; see the Qt notice"),
    ("shiboken6", "shiboken6", "LGPL-3.0-only", "https://www.qt.io/qt-for-python", ""),
    ("numpy", "NumPy", "BSD-3-Clause", "https://numpy.org", ""),
    ("opencv-python-headless", "OpenCV", "Apache-2.0", "https://opencv.org",
     "the wheel's third-party libraries are listed in its LICENSE-3RD-PARTY.txt"),
    ("onnxruntime", "ONNX Runtime", "MIT", "https://onnxruntime.ai", ""),
    ("scipy", "SciPy", "BSD-3-Clause", "https://scipy.org", ""),
    ("scikit-image", "scikit-image", "BSD-3-Clause", "https://scikit-image.org", ""),
    ("SQLAlchemy", "SQLAlchemy", "MIT", "https://www.sqlalchemy.org", ""),
    ("alembic", "Alembic", "MIT", "https://alembic.sqlalchemy.org", ""),
    ("torch", "PyTorch", "BSD-3-Clause", "https://pytorch.org", ""),
    ("torchvision", "torchvision", "BSD-3-Clause", "https://pytorch.org/vision", ""),
    ("segment_anything", "segment-anything (code)", "Apache-2.0",
     "https://github.com/facebookresearch/segment-anything", ""),
)
WEIGHTS = (
    Component("Segment Anything weights (Meta AI)", None, "Apache-2.0",
              "https://github.com/facebookresearch/segment-anything",
              "not bundled; installed separately"),
    Component("MobileSAM weights", None, "Apache-2.0", "https://github.com/ChaoningZhang/MobileSAM",
              "not bundled; installed separately"),
)
PYINSTALLER = ("pyinstaller", "PyInstaller bootloader",
               "GPL-2.0-or-later WITH Bootloader-exception", "https://pyinstaller.org",
               "the bundle's launcher; the exception allows any licence for the bundled program")


def _dist_version(dist: str) -> str | None:
    try:
        return metadata.version(dist)
    except metadata.PackageNotFoundError:
        return None


def _dist_licence(dist: str, fallback: str = "see its licence file") -> str:
    """SPDX expression, short License field or classifier from the metadata, else `fallback`."""
    try:
        md = metadata.metadata(dist)
    except metadata.PackageNotFoundError:
        return fallback
    expr = md.get("License-Expression")
    if expr:
        return expr
    lic = (md.get("License") or "").strip()
    if lic and "\n" not in lic and len(lic) <= 80:
        return lic
    classifiers = [c.split("::")[-1].strip() for c in md.get_all("Classifier") or []
                   if c.startswith("License ::")]
    return ", ".join(classifiers) or fallback


def _module_version(module: str, dist: str) -> str | None:
    """Version of an importable module's distribution, without importing the module."""
    try:
        if importlib.util.find_spec(module) is None:
            return None
    except (ImportError, ValueError):
        return None
    return _dist_version(dist) or "installed"


def git_hash(repo: Path = REPO_ROOT) -> str | None:
    """The checkout's commit (12 hex digits, "+dirty" with local changes), None without git."""
    if not (repo / ".git").exists():
        return None
    try:
        rev = subprocess.run(["git", "rev-parse", "--short=12", "HEAD"], cwd=repo, text=True,
                             capture_output=True, timeout=10, check=True).stdout.strip()
        dirty = subprocess.run(["git", "status", "--porcelain", "--untracked-files=no"],
                               cwd=repo, text=True, capture_output=True, timeout=10).stdout.strip()
    except (OSError, subprocess.SubprocessError):
        return None
    return f"{rev}+dirty" if dirty else rev


def components(distributions: Iterable[str] | None = None, bundler: bool = False
               ) -> tuple[Component, ...]:
    """Own code, SAM weights, then the key components and the other `distributions` (those in
    a bundle; None: every installed key component); `bundler` adds the PyInstaller bootloader."""
    wanted = None if distributions is None else {_norm(d) for d in distributions}
    out = [Component(APP_NAME, __version__, APP_LICENCE, "", "this application"), *WEIGHTS]
    seen = {_norm(APP_NAME)}
    for dist, name, fallback, url, note in KEY_COMPONENTS:
        v = _dist_version(dist)
        if v is not None and (wanted is None or _norm(dist) in wanted):
            out.append(Component(name, v, _dist_licence(dist, fallback), url, note, dist))
            seen.add(_norm(dist))
    for dist in sorted(set(distributions or ()), key=str.lower):
        if _norm(dist) in seen or _dist_version(dist) is None:
            continue
        seen.add(_norm(dist))
        out.append(Component(dist, _dist_version(dist), _dist_licence(dist), "", "", dist))
    if bundler:
        dist, name, fallback, url, note = PYINSTALLER
        out.append(Component(name, _dist_version(dist), fallback, url, note, dist))
    return tuple(out)


def _norm(dist: str) -> str:
    return re.sub(r"[-_.]+", "-", dist).lower()


def live_about_info(flavour: str = "source", distributions: Iterable[str] | None = None,
                    built: str | None = None) -> AboutInfo:
    """AboutInfo read from this Python environment (a source checkout, or at a bundle's build
    with the `distributions` it contains)."""
    distributions = None if distributions is None else list(distributions)
    bundled = {_norm(d) for d in distributions or ()}

    def version(module: str, dist: str) -> str | None:
        if distributions is not None and _norm(dist) not in bundled:
            return None
        return _module_version(module, dist)

    return AboutInfo(
        name=APP_NAME,
        version=__version__,
        git_hash=git_hash(),
        flavour=flavour,
        built=built,
        python=platform.python_version(),
        qt=version("PySide6", "PySide6_Essentials"),
        torch=version("torch", "torch"),
        onnxruntime=version("onnxruntime", "onnxruntime"),
        numpy=version("numpy", "numpy"),
        opencv=version("cv2", "opencv-python-headless"),
        components=components(distributions, bundler=flavour in ("lite", "full")),
    )


def about_info() -> AboutInfo:
    """The running program's AboutInfo: recorded at build time in a bundle, else live."""
    if not getattr(sys, "frozen", False):
        return live_about_info()
    if BUNDLE_ABOUT.is_file():
        return AboutInfo.from_dict(json.loads(BUNDLE_ABOUT.read_text(encoding="utf-8")))
    flavour = "bundle"  # built with plain `pyinstaller`, not build.py: no recorded details
    if BUNDLE_FLAVOUR.is_file():
        flavour = BUNDLE_FLAVOUR.read_text(encoding="utf-8").strip() or flavour
    return live_about_info(flavour)


# ------------------------------------------------------------------ licence texts
_LICENCE_FILE = re.compile(r"(LICEN[CS]E|COPYING|NOTICE|ThirdPartyNotices)", re.IGNORECASE)


def licence_files(dist: str) -> list[tuple[str, str]]:
    """(relative path, text) of the licence/notice files a distribution installed (dist-info
    and its top-level package folders; tests and vendored sub-packages skipped)."""
    try:
        files = metadata.distribution(dist).files or []
    except metadata.PackageNotFoundError:
        return []
    out = []
    for f in files:
        parts = f.parts
        if not _LICENCE_FILE.search(f.name) or len(parts) > 3 or f.suffix in (".py", ".pyc"):
            continue
        if len(parts) == 3 and not parts[0].endswith(".dist-info"):
            continue
        try:
            path = Path(f.locate())
            if path.is_file() and path.stat().st_size < 4 << 20:
                out.append((str(f), path.read_text(encoding="utf-8", errors="replace")))
        except OSError:
            continue
    return out


def licences_text(info: AboutInfo | None = None, texts_dir: Path | None = None) -> str:
    """LICENSES.txt: notices (SAM weights, Qt), the component table, then the full licence
    texts (from each component's installed files and `texts_dir`, default
    packaging/desktop/licenses in a checkout). In a bundle: the text recorded at build time."""
    if info is None and getattr(sys, "frozen", False) and BUNDLE_LICENCES.is_file():
        return BUNDLE_LICENCES.read_text(encoding="utf-8")
    info = info or about_info()
    texts_dir = texts_dir if texts_dir is not None else LICENCE_TEXTS_DIR
    rule = "=" * 78
    parts = [
        f"{info.name} {info.version} ({info.flavour}), git {info.git_hash or 'unknown'}",
        f"{info.name} itself is licensed under {APP_LICENCE}.",
        "",
        rule, "Segment Anything weights", rule, SAM_NOTICE, "",
        rule, "Qt (LGPL-3.0)", rule, QT_NOTICE, "",
        rule, "Components", rule,
    ]
    for c in info.components:
        v = f" {c.version}" if c.version else ""
        extra = "; ".join(x for x in (c.url, c.note) if x)
        parts.append(f"- {c.name}{v}: {c.licence}" + (f" ({extra})" if extra else ""))
    parts.append("")
    done: set[str] = set()
    for dist in (c.distribution for c in info.components if c.distribution):
        if _norm(dist) in done:
            continue
        done.add(_norm(dist))
        for rel, text in licence_files(dist):
            parts += [rule, f"{dist}: {rel}", rule, text.rstrip(), ""]
    if texts_dir.is_dir():
        for path in sorted(texts_dir.glob("*.txt")):
            parts += [rule, f"Full text: {path.stem}", rule,
                      path.read_text(encoding="utf-8").rstrip(), ""]
    return "\n".join(parts) + "\n"


def write_about_files(folder: Path, info: AboutInfo, licences: str) -> None:
    """ABOUT.json and LICENSES.txt in `folder` (atomically)."""
    from app.outputs.atomic_write import write_text

    write_text(folder / "ABOUT.json", json.dumps(info.to_dict(), indent=2) + "\n")
    write_text(folder / "LICENSES.txt", licences)
