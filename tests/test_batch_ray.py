"""The Ray backend (Ray Data, actor pool) on a local Ray started by the test: same findings as
the local backend, failures reported the same way, resumable the same way."""

from __future__ import annotations

import functools

import pytest

from app.batch import BatchConfig, run_batch
from sam_engine.factory import load_engine
from tests.batch_data import write_parts

ray = pytest.importorskip("ray")


@pytest.fixture(scope="module")
def local_ray():
    ray.init(num_cpus=2, include_dashboard=False, log_to_driver=False)
    yield
    ray.shutdown()


def findings(result) -> list[tuple]:
    return [(r.rel, f.defect_class, f.measurements.area_px, f.measurements.bbox,
             round(f.score, 6), r.inspection.verdict)
            for r in result.records for f in r.inspection.findings]


@pytest.mark.slow
def test_ray_backend_gives_the_local_findings(tmp_path, local_ray):
    inp = tmp_path / "in"
    write_parts(inp, 4, seed=5)
    (inp / "corrupt.png").write_bytes(b"\x89PNG\r\n\x1a\n" + b"\0" * 40)
    local = run_batch(BatchConfig(inp, tmp_path / "local", prompts=inp, engine="classic",
                                  quiet=True))
    cfg = BatchConfig(inp, tmp_path / "ray", prompts=inp, engine="classic", quiet=True,
                      ray="local", ray_actors=2)
    remote = run_batch(cfg, engine_factory=functools.partial(load_engine, "classic"))
    assert findings(remote) == findings(local) and len(findings(local)) >= 4
    assert remote.summary["backend"].startswith("ray")
    assert remote.exit_code == local.exit_code == 1
    assert [f["path"] for f in remote.summary["failed"]] == [str(inp / "corrupt.png")]
    again = run_batch(cfg)  # resumable like the local backend (default engine factory)
    assert again.summary["images_skipped"] == 4 and again.summary["images_inspected"] == 0
