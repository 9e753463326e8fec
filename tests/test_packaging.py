"""Desktop packaging: paths, engine choice, About/licences, the self-test, and (slow) the frozen
lite bundle built with PyInstaller, started offscreen with --self-test, never importing torch."""

from __future__ import annotations

import configparser
import importlib.util
import json
import os
import struct
import subprocess
import sys
from pathlib import Path

import cv2
import pytest

from app import __version__
from app.shell import about, engine_choice, paths
from app.shell.desktop import first_run_message
from app.shell.desktop import main as desktop_main
from sam_engine.errors import SamEngineError
from sam_engine.weights import registry

ROOT = Path(__file__).resolve().parents[1]
DESKTOP = ROOT / "packaging" / "desktop"


@pytest.fixture
def isolated(tmp_path, monkeypatch):
    """No real user, repo or environment model folder, and logs in tmp."""
    monkeypatch.setattr(registry, "REPO_CHECKPOINTS", tmp_path / "repo_ckpts")
    monkeypatch.setenv("HOME", str(tmp_path / "home"))
    monkeypatch.setenv("XDG_DATA_HOME", str(tmp_path / "xdg_data"))
    monkeypatch.setenv("XDG_STATE_HOME", str(tmp_path / "xdg_state"))
    monkeypatch.delenv(registry.ENV_MODELS, raising=False)
    monkeypatch.delenv(paths.ENV_LOGS, raising=False)
    monkeypatch.setattr(sys, "platform", "linux")
    return tmp_path


def _fake_export(folder: Path) -> Path:
    folder.mkdir(parents=True)
    (folder / paths.ONNX_MANIFEST).write_text("{}", encoding="utf-8")
    return folder


# ------------------------------------------------------------------ paths
def test_user_and_log_dirs_follow_xdg(isolated):
    assert paths.user_data_dir() == isolated / "xdg_data" / "sam-inspect"
    assert paths.user_models_dir() == registry.user_data_dir()
    logs = paths.log_dir()
    assert logs == isolated / "xdg_state" / "sam-inspect" / "logs" and logs.is_dir()


def test_log_dir_env_override_and_fallback_when_not_writable(isolated, monkeypatch):
    monkeypatch.setenv(paths.ENV_LOGS, str(isolated / "mylogs"))
    assert paths.log_dir() == isolated / "mylogs"
    blocker = isolated / "a_file"
    blocker.write_text("x")
    monkeypatch.setenv(paths.ENV_LOGS, str(blocker / "logs"))  # a file cannot hold a folder
    fallback = paths.log_dir()
    assert fallback.name == "sam-inspect-logs" and fallback.is_dir()


def test_frozen_bundle_searches_models_beside_the_executable_not_inside(isolated, monkeypatch):
    bundle = isolated / "bundle"
    bundle.mkdir()
    monkeypatch.setattr(sys, "frozen", True, raising=False)
    monkeypatch.setattr(sys, "executable", str(bundle / "sam-inspect"))
    dirs = paths.models_search_dirs()
    assert dirs == [bundle / "models", registry.user_data_dir()]
    assert registry.REPO_CHECKPOINTS not in dirs
    assert paths.models_install_dir() == bundle / "models"
    assert str(bundle / "models") in paths.no_models_message()


def test_onnx_exports_found_in_search_dirs_and_their_subfolders(isolated, monkeypatch):
    direct = _fake_export(isolated / "direct")
    user_sub = _fake_export(registry.user_data_dir() / "vit_b")
    (registry.user_data_dir() / "not_an_export").mkdir()
    monkeypatch.setenv(registry.ENV_MODELS, str(direct))
    assert paths.find_onnx_exports() == [direct, user_sub]
    status = paths.models_status()
    assert status.any and status.onnx_exports == (direct, user_sub) and not status.checkpoints


def test_no_models_message_says_where_and_how(isolated):
    status = paths.models_status()
    assert not status.any
    msg = paths.no_models_message(status)
    assert "export-onnx" in msg and "sam_vit_b_01ec64.pth" in msg
    for d in status.searched:
        assert str(d) in msg


def test_first_run_message_is_shown_once(isolated):
    assert "No Segment Anything model" in first_run_message()
    assert first_run_message() is None
    _fake_export(registry.user_data_dir() / "vit_b")
    assert first_run_message() is None


def test_manifest_is_package_data():
    assert registry.DEFAULT_MANIFEST.parent == Path(registry.__file__).resolve().parent
    assert registry.DEFAULT_MANIFEST.is_file()
    assert not (ROOT / "models" / "manifest.json").exists(), "one manifest, in the package"


# ------------------------------------------------------------------ engine choice
def test_auto_without_models_is_the_default_engine_with_a_note(isolated, monkeypatch):
    monkeypatch.setattr(engine_choice, "torch_available", lambda: False)
    eng = engine_choice.load_desktop_engine("auto")
    assert eng.info.name == "classic"
    assert str(paths.models_install_dir()) in eng.info.note


def test_auto_with_a_broken_export_falls_back_and_says_why(isolated, monkeypatch):
    monkeypatch.setattr(engine_choice, "torch_available", lambda: False)
    broken = _fake_export(registry.user_data_dir() / "vit_b")
    eng = engine_choice.load_desktop_engine("auto")
    assert eng.info.name == "classic"
    assert str(broken) in eng.info.note and "not usable" in eng.info.note


def test_explicit_engines_fail_clearly(isolated, monkeypatch):
    monkeypatch.setattr(engine_choice, "torch_available", lambda: False)
    with pytest.raises(SamEngineError, match="lite bundle"):
        engine_choice.load_desktop_engine("sam")
    with pytest.raises(SamEngineError, match="no ONNX export found"):
        engine_choice.load_desktop_engine("onnx")
    with pytest.raises(SamEngineError, match="unknown engine"):
        engine_choice.load_desktop_engine("gpu")
    assert engine_choice.load_desktop_engine("classic").info.name == "classic"


# ------------------------------------------------------------------ about / licences
def test_about_info_names_version_git_and_licences():
    info = about.about_info()
    assert info.version == __version__ and info.flavour == "source"
    if (ROOT / ".git").exists():
        assert info.git_hash and len(info.git_hash.split("+")[0]) == 12
    by_name = {c.name: c for c in info.components}
    assert by_name["sam-inspect"].licence == "Apache-2.0"
    assert by_name["Segment Anything weights (Meta AI)"].licence == "Apache-2.0"
    assert "LGPL-3.0" in by_name["Qt / PySide6"].licence
    assert "Qt" in info.summary() and info.version in info.summary()
    assert about.AboutInfo.from_dict(json.loads(json.dumps(info.to_dict()))) == info


def test_licences_text_has_notices_and_full_texts():
    text = about.licences_text()
    assert "GNU LESSER GENERAL PUBLIC LICENSE" in text and "Version 3, 29 June 2007" in text
    assert "Apache License" in text and "Segment Anything" in text
    assert "replace them with your own build" in text  # the LGPL relinking notice
    assert "numpy" in text.lower() and "BSD" in text


def test_frozen_about_reads_what_the_build_recorded(tmp_path, monkeypatch):
    recorded = about.AboutInfo("sam-inspect", "9.9", "abc", "lite", "2030-01-01", "3.11", "6",
                               None, "1.0", "2.0", "4.0", (about.Component("x", "1", "MIT"),))
    about_file, lic_file = tmp_path / "a.json", tmp_path / "l.txt"
    about_file.write_text(json.dumps(recorded.to_dict()))
    lic_file.write_text("recorded licences")
    monkeypatch.setattr(about, "BUNDLE_ABOUT", about_file)
    monkeypatch.setattr(about, "BUNDLE_LICENCES", lic_file)
    monkeypatch.setattr(sys, "frozen", True, raising=False)
    assert about.about_info() == recorded
    assert about.licences_text() == "recorded licences"


def test_write_about_files(tmp_path):
    info = about.about_info()
    about.write_about_files(tmp_path, info, "L")
    assert json.loads((tmp_path / "ABOUT.json").read_text())["version"] == __version__
    assert (tmp_path / "LICENSES.txt").read_text() == "L"


# ------------------------------------------------------------------ entry point, self-test
def test_version_flag(capsys):
    assert desktop_main(["--version"]) == 0
    assert capsys.readouterr().out.startswith(f"sam-inspect {__version__} (source)")


def _isolated_env(tmp: Path) -> dict[str, str]:
    env = {k: v for k, v in os.environ.items()
           if k not in ("DISPLAY", "WAYLAND_DISPLAY", registry.ENV_MODELS)}
    env.update(HOME=str(tmp / "home"), XDG_DATA_HOME=str(tmp / "data"),
               XDG_STATE_HOME=str(tmp / "state"), QT_QPA_PLATFORM="offscreen")
    return env


def test_self_test_in_a_fresh_interpreter_passes_without_torch(tmp_path):
    out = tmp_path / "self_test.json"
    code = ("import sys; from app.shell.desktop import main; "
            f"sys.exit(main(['--self-test', '--forbid-torch', '--json', {str(out)!r}]))")
    proc = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True,
                          env=_isolated_env(tmp_path), cwd=ROOT, timeout=300)
    assert proc.returncode == 0, proc.stdout + proc.stderr
    result = json.loads(out.read_text())
    assert result["ok"] and not result["torch_imported"]
    names = {c["name"]: c for c in result["checks"]}
    assert {"engine", "recipe", "database", "qt", "heavy modules"} <= set(names)
    assert "read back equal" in names["database"]["detail"]
    assert "judged" in names["recipe"]["detail"]
    assert "classic" in names["engine"]["detail"] and "mean box IoU" in names["engine"]["detail"]
    log = tmp_path / "state" / "sam-inspect" / "logs" / "sam-inspect.log"
    assert log.is_file() and "starting" in log.read_text()


def test_self_test_reports_a_failing_check(tmp_path):
    code = ("import sys; from app.shell.desktop import main; "
            "sys.exit(main(['--self-test', '--no-qt', '--engine', 'onnx']))")
    proc = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True,
                          env=_isolated_env(tmp_path), cwd=ROOT, timeout=300)
    assert proc.returncode == 1
    assert "[FAIL] engine: SamEngineError: no ONNX export found" in proc.stdout
    assert "self-test FAILED" in proc.stdout


def test_self_test_database_check_writes_and_reads_back(monkeypatch):
    from app.shell import self_test
    from app.store import InspectionStore

    detail = self_test.database_check()
    assert "1 inspection with 1 defect written and read back equal" in detail
    # a store that loses the defect's mask on the way is caught
    real = InspectionStore.get_inspection

    def lossy(self, inspection_id):
        ins = real(self, inspection_id)
        ins.findings[0].mask[:] = False
        return ins

    monkeypatch.setattr(InspectionStore, "get_inspection", lossy)
    with pytest.raises(AssertionError, match="mask"):
        self_test.database_check()


def test_self_test_recipe_check_uses_the_built_in_recipe_without_samples(tmp_path):
    from app.shell import self_test

    detail = self_test.recipe_check(tmp_path / "no_samples" / "demo_part.toml")
    assert "built-in recipe 'self_test' parsed" in detail
    assert "judged: small scratch PASS, large scratch FAIL (max_area)" in detail
    with_samples = self_test.recipe_check(self_test.RECIPE)
    assert "'demo_part'" in with_samples and "judged:" in with_samples


def test_self_test_recipe_check_fails_when_judging_is_wrong(monkeypatch):
    from app.inspection import verdict
    from app.inspection.findings import PASS, Verdict
    from app.shell import self_test

    monkeypatch.setattr(verdict, "judge", lambda findings, recipe: Verdict(PASS))
    with pytest.raises(AssertionError, match="large scratch"):
        self_test.recipe_check(self_test.RECIPE)


# ------------------------------------------------------------------ desktop entry, icon
def test_desktop_entry_and_icons():
    entry = configparser.ConfigParser(interpolation=None)
    entry.optionxform = str
    entry.read(DESKTOP / "sam-inspect.desktop", encoding="utf-8")
    section = entry["Desktop Entry"]
    assert section["Type"] == "Application" and section["Exec"].startswith("sam-inspect")
    assert section["Icon"] == "sam-inspect" and section["Terminal"] == "false"
    png = cv2.imread(str(DESKTOP / "icon.png"), cv2.IMREAD_UNCHANGED)
    assert png.shape == (256, 256, 4) and png[..., 3].max() == 255
    ico = (DESKTOP / "icon.ico").read_bytes()
    reserved, kind, count = struct.unpack("<HHH", ico[:6])
    assert (reserved, kind) == (0, 1) and count >= 4
    first_offset = struct.unpack("<I", ico[6 + 12:6 + 16])[0]
    assert ico[first_offset:first_offset + 8] == b"\x89PNG\r\n\x1a\n"


# ------------------------------------------------------------------ the frozen lite bundle
def _exe(bundle: Path) -> Path:
    return bundle / ("sam-inspect.exe" if sys.platform.startswith("win") else "sam-inspect")


@pytest.fixture(scope="module")
def lite_bundle(tmp_path_factory) -> Path:
    if importlib.util.find_spec("PyInstaller") is None:
        pytest.skip("PyInstaller is not installed (pip install -e '.[package]')")
    base = tmp_path_factory.mktemp("lite_bundle")
    proc = subprocess.run(
        [sys.executable, str(DESKTOP / "build.py"), "lite", "--dist", str(base / "dist"),
         "--work", str(base / "work")], capture_output=True, text=True, cwd=ROOT, timeout=1500)
    assert proc.returncode == 0, proc.stdout[-4000:] + proc.stderr[-4000:]
    return base / "dist" / "sam-inspect-lite"


def _run_frozen(bundle: Path, tmp: Path, *args: str) -> subprocess.CompletedProcess:
    return subprocess.run([str(_exe(bundle)), *args], capture_output=True, text=True,
                          env=_isolated_env(tmp), cwd=tmp, timeout=300)


@pytest.mark.slow
def test_lite_bundle_contents(lite_bundle):
    internal = lite_bundle / "_internal"
    for heavy in ("torch", "torchvision", "segment_anything", "transformers", "ray"):
        assert not (internal / heavy).exists(), f"{heavy} must not be in the lite bundle"
    for needed in ("PySide6", "onnxruntime", "cv2", "numpy"):
        assert (internal / needed).is_dir()
    assert (internal / "sam_engine" / "weights" / "models_manifest.json").is_file()
    about_json = json.loads((lite_bundle / "ABOUT.json").read_text())
    assert about_json["flavour"] == "lite" and about_json["version"] == __version__
    assert about_json["torch"] is None and about_json["onnxruntime"]
    licences = (lite_bundle / "LICENSES.txt").read_text()
    assert "GNU LESSER GENERAL PUBLIC LICENSE" in licences and "PyInstaller" in licences
    names = {c["name"] for c in about_json["components"]}
    assert {"Qt / PySide6", "ONNX Runtime", "OpenCV", "NumPy"} <= names
    assert not names & {"PyTorch", "torchvision", "segment-anything (code)"}
    assert "- PyTorch" not in licences
    assert (internal / "app" / "shell" / "_bundle_about.json").is_file()
    assert (lite_bundle / "models" / "README.txt").is_file()
    assert (lite_bundle / "sam-inspect.desktop").is_file()
    assert not list(internal.rglob("*.pth")) and not list(internal.rglob("encoder.onnx"))


@pytest.mark.slow
def test_lite_bundle_self_test_offscreen_without_torch(lite_bundle, tmp_path):
    version = _run_frozen(lite_bundle, tmp_path, "--version")
    assert version.returncode == 0 and f"{__version__} (lite)" in version.stdout
    out = tmp_path / "self_test.json"
    proc = _run_frozen(lite_bundle, tmp_path, "--self-test", "--forbid-torch", "--json", str(out))
    assert proc.returncode == 0, proc.stdout + proc.stderr
    result = json.loads(out.read_text())
    assert result["ok"] and result["frozen"] and result["flavour"] == "lite"
    assert not result["torch_imported"]
    checks = {c["name"]: c for c in result["checks"]}
    assert checks["engine"]["detail"].startswith("classic:")
    assert "No Segment Anything model" in checks["models"]["detail"]
    assert "platform offscreen" in checks["qt"]["detail"]
    assert (tmp_path / "state" / "sam-inspect" / "logs" / "sam-inspect.log").is_file()


@pytest.mark.slow
def test_lite_bundle_runs_sam_from_an_onnx_export_beside_it(lite_bundle, tmp_path):
    from sam_engine.onnx.export import ExportOptions, export_onnx
    from tests.sam_factory import tiny_sam

    # fp32 graphs only, one verification case: a few seconds (tests/onnx_models.py adds int8)
    export = export_onnx(tiny_sam(3), "tiny", tmp_path / "tiny", checkpoint_sha256="0" * 64,
                         options=ExportOptions(encoder=True, verify_cases=1))
    models = lite_bundle / "models" / "tiny"
    models.symlink_to(export.out_dir, target_is_directory=True)
    try:
        out = tmp_path / "self_test.json"
        proc = _run_frozen(lite_bundle, tmp_path, "--self-test", "--forbid-torch", "--no-qt",
                           "--json", str(out))
    finally:
        models.unlink()
    assert proc.returncode == 0, proc.stdout + proc.stderr
    checks = {c["name"]: c for c in json.loads(out.read_text())["checks"]}
    assert checks["engine"]["detail"].startswith("sam-onnx:tiny"), checks["engine"]
    assert not json.loads(out.read_text())["torch_imported"]


@pytest.mark.slow
def test_lite_bundle_gui_starts_offscreen_on_a_folder(lite_bundle, tmp_path):
    """The frozen window opens a folder of parts and keeps running (it is closed after a few
    seconds); a missing module or plugin would end it at once with a traceback."""
    if importlib.util.find_spec("app.gui.main_window") is None:
        pytest.skip("the GUI is not in this checkout")
    import shutil

    folder = tmp_path / "parts"
    folder.mkdir()
    for png in sorted((ROOT / "samples").glob("part_0[12]_*.png")):
        shutil.copy2(png, folder / png.name)
    proc = subprocess.Popen([str(_exe(lite_bundle)), str(folder), "--db",
                             str(tmp_path / "gui.db")], stdout=subprocess.PIPE,
                            stderr=subprocess.STDOUT, text=True, env=_isolated_env(tmp_path),
                            cwd=tmp_path)
    try:
        out, _ = proc.communicate(timeout=15)
        pytest.fail(f"the GUI exited with status {proc.returncode}:\n{out[-3000:]}")
    except subprocess.TimeoutExpired:
        pass
    finally:
        if proc.poll() is None:
            proc.terminate()
        out, _ = proc.communicate(timeout=30)
    assert "Traceback" not in out, out[-3000:]
    log = (tmp_path / "state" / "sam-inspect" / "logs" / "sam-inspect.log").read_text()
    assert "starting" in log and "Traceback" not in log


def test_onnx_engine_goes_through_the_factory(tmp_path, monkeypatch):
    from sam_engine import factory

    seen = {}

    def fake_load_engine(engine, **kw):
        seen.update(engine=engine, **kw)
        return "engine"

    monkeypatch.setattr(engine_choice, "load_engine", fake_load_engine)
    if "onnx" in getattr(factory, "ALL_ENGINES", factory.ENGINE_NAMES):
        assert engine_choice.load_onnx_engine(tmp_path) == "engine"
        assert seen == {"engine": "onnx", "models_dir": tmp_path}
