"""EmbeddingCache: memory LRU, verified disk store, failures that must never crash."""

from __future__ import annotations

import errno
import logging
import os
import shutil
import tempfile
import threading
from pathlib import Path

import numpy as np
import pytest

from sam_engine.constants import PREPROCESS_VERSION
from sam_engine.embedding_cache import (
    SUFFIX,
    EmbeddingCache,
    cache_key,
    default_cache_dir,
)
from sam_engine.errors import CacheError

KIB = 1024


def _value(seed: int = 0, n: int = KIB) -> dict[str, np.ndarray]:
    """A value of n float32 bytes plus a small int array."""
    rng = np.random.default_rng(seed)
    return {"embedding": rng.standard_normal(n // 4).astype(np.float32).reshape(1, -1),
            "size": np.array([seed, 2 * seed], np.int64)}


def _nbytes(value) -> int:
    return sum(a.nbytes for a in value.values())


def _same(a, b) -> bool:
    return a.keys() == b.keys() and all(
        a[k].dtype == b[k].dtype and a[k].shape == b[k].shape and np.array_equal(a[k], b[k])
        for k in a
    )


def _files(d: Path) -> list[Path]:
    return sorted(d.glob("*" + SUFFIX))


# ------------------------------------------------------------------ memory
def test_miss_then_hit():
    cache = EmbeddingCache()
    assert cache.get("k") is None and "k" not in cache
    v = _value()
    cache.put("k", v)
    assert "k" in cache and _same(cache.get("k"), v)
    s = cache.stats
    assert (s.misses, s.hits_memory, s.hits_disk) == (1, 1, 0)
    assert s.bytes_in_memory == _nbytes(v)


def test_put_keeps_a_private_copy():
    cache = EmbeddingCache()
    v = _value()
    cache.put("k", v)
    v["embedding"][:] = 0
    assert cache.get("k")["embedding"].any()


def test_lru_order_and_byte_bound():
    size = _nbytes(_value())
    cache = EmbeddingCache(max_bytes=3 * size)
    for k in "abc":
        cache.put(k, _value())
    assert cache.get("a") is not None  # a is now most recent: b is the oldest
    cache.put("d", _value())
    assert "b" not in cache and all(k in cache for k in "acd")
    s = cache.stats
    assert s.evictions == 1 and s.bytes_in_memory == 3 * size


def test_byte_bound_evicts_several_for_a_big_value():
    small = _value(n=KIB)
    big = _value(n=3 * KIB)
    cache = EmbeddingCache(max_bytes=4 * _nbytes(small))
    for k in "abcd":
        cache.put(k, small)
    cache.put("big", big)
    assert cache.stats.bytes_in_memory <= 4 * _nbytes(small)
    assert "big" in cache and "a" not in cache and "b" not in cache and "d" in cache


def test_value_bigger_than_bound_is_not_kept_in_memory(tmp_path):
    big = _value(n=8 * KIB)
    cache = EmbeddingCache(max_bytes=KIB, disk_dir=tmp_path)
    cache.put("big", big)
    assert cache.stats.bytes_in_memory == 0 and len(cache) == 0
    assert len(_files(tmp_path)) == 1  # but still on disk
    assert _same(cache.get("big"), big) and cache.stats.hits_disk == 1


def test_replacing_a_key_updates_bytes():
    cache = EmbeddingCache()
    cache.put("k", _value(n=KIB))
    cache.put("k", _value(n=2 * KIB))
    assert cache.stats.bytes_in_memory == _nbytes(_value(n=2 * KIB)) and len(cache) == 1


def test_clear_forgets_memory_only(tmp_path):
    cache = EmbeddingCache(disk_dir=tmp_path)
    cache.put("k", _value())
    cache.clear()
    assert len(cache) == 0 and cache.stats.bytes_in_memory == 0
    assert cache.get("k") is not None and cache.stats.hits_disk == 1


def test_bad_values_are_rejected():
    cache = EmbeddingCache()
    with pytest.raises(CacheError):
        cache.put("k", {"x": np.array([object()])})
    with pytest.raises(CacheError):
        cache.put("", _value())


# -------------------------------------------------------------------- disk
def test_disk_round_trip_is_bit_exact_and_promoted(tmp_path):
    v = _value(3)
    v["mask"] = np.array([[True, False]])
    v["half"] = np.arange(5, dtype=np.float16)
    v["empty"] = np.zeros((0, 4), np.uint8)
    EmbeddingCache(disk_dir=tmp_path).put("k", v)
    cold = EmbeddingCache(disk_dir=tmp_path)
    assert "k" in cold  # file present
    got = cold.get("k")
    assert _same(got, v)
    assert all(a.flags.writeable for a in got.values())  # torch.from_numpy needs this
    assert cold.stats.hits_disk == 1 and cold.stats.bytes_in_memory == _nbytes(v)
    assert cold.get("k") is got and cold.stats.hits_memory == 1


def test_disk_file_names_are_safe(tmp_path):
    cache = EmbeddingCache(disk_dir=tmp_path / "sub")
    key = cache_key("ab" * 16, "vit_b/../x:y", extra="a|b\\c")
    cache.put(key, _value())
    [f] = _files(tmp_path / "sub")
    assert f.name.replace(SUFFIX, "").isalnum()
    assert not list((tmp_path / "sub").glob(".tmp-*"))  # no temp file left behind


def _corrupt_payload(p: Path) -> None:
    data = bytearray(p.read_bytes())
    data[-5] ^= 0xFF
    p.write_bytes(bytes(data))


def _truncate(p: Path) -> None:
    p.write_bytes(p.read_bytes()[:-100])


def _garbage_header(p: Path) -> None:
    data = bytearray(p.read_bytes())
    data[12:40] = b"x" * 28
    p.write_bytes(bytes(data))


def _bad_magic(p: Path) -> None:
    p.write_bytes(b"PICKLE!!" + p.read_bytes()[8:])


@pytest.mark.parametrize("damage", [_corrupt_payload, _truncate, _garbage_header, _bad_magic])
def test_corrupt_file_is_deleted_and_a_miss(tmp_path, caplog, damage):
    EmbeddingCache(disk_dir=tmp_path).put("k", _value())
    [f] = _files(tmp_path)
    damage(f)
    cold = EmbeddingCache(disk_dir=tmp_path)
    with caplog.at_level(logging.WARNING, logger="sam_engine.embedding_cache"):
        assert cold.get("k") is None
    assert not f.exists()
    assert str(f) in caplog.text and "corrupt" in caplog.text
    s = cold.stats
    assert s.misses == 1 and s.disk_errors == 1


def test_wrong_key_file_is_deleted(tmp_path, caplog):
    cache = EmbeddingCache(disk_dir=tmp_path)
    cache.put("a", _value())
    [fa] = _files(tmp_path)
    fb = cache._path("b")
    os.replace(fa, fb)  # a file named for "b" that holds "a"
    cold = EmbeddingCache(disk_dir=tmp_path)
    with caplog.at_level(logging.WARNING, logger="sam_engine.embedding_cache"):
        assert cold.get("b") is None
    assert not fb.exists() and "expected 'b'" in caplog.text


def test_wrong_version_file_is_deleted(tmp_path, caplog):
    EmbeddingCache(disk_dir=tmp_path).put("k", _value())
    [f] = _files(tmp_path)
    data = f.read_bytes()
    assert b'"version": 1' in data
    f.write_bytes(data.replace(b'"version": 1', b'"version": 9', 1))
    with caplog.at_level(logging.WARNING, logger="sam_engine.embedding_cache"):
        assert EmbeddingCache(disk_dir=tmp_path).get("k") is None
    assert not f.exists() and "version 9" in caplog.text


def test_no_space_on_write_keeps_value_in_memory(tmp_path, caplog, monkeypatch):
    cache = EmbeddingCache(disk_dir=tmp_path)

    def full(*args, **kwargs):
        raise OSError(errno.ENOSPC, "No space left on device")

    monkeypatch.setattr(os, "fsync", full)
    with caplog.at_level(logging.WARNING, logger="sam_engine.embedding_cache"):
        cache.put("a", _value(1))
        cache.put("b", _value(2))
    warnings = [r for r in caplog.records if r.levelno == logging.WARNING]
    assert len(warnings) == 1  # one warning, not one per put
    assert str(tmp_path) in caplog.text and "free disk space" in caplog.text
    assert cache.stats.disk_errors == 2
    assert _same(cache.get("a"), _value(1)) and _same(cache.get("b"), _value(2))
    assert not list(tmp_path.iterdir())  # temp files removed


def _as_unprivileged_user(check) -> None:
    """Run check() in a forked child that has dropped root to the user nobody (root ignores
    permission bits); the child's failure fails the test with its message. Python's own files
    may be out of that user's reach: a first put into a writable folder does the lazy imports."""
    with tempfile.TemporaryDirectory() as warm:
        EmbeddingCache(disk_dir=warm).put("warm-up", _value())
    r, w = os.pipe()
    pid = os.fork()
    if pid == 0:  # the child: never return into pytest
        os.close(r)
        code, msg = 0, b""
        try:
            os.setgid(65534)
            os.setuid(65534)
            check()
        except BaseException as exc:  # noqa: BLE001 - reported to the parent
            code, msg = 1, repr(exc).encode()
        os.write(w, msg)
        os._exit(code)
    os.close(w)
    with os.fdopen(r, "rb") as f:
        msg = f.read().decode()
    _, status = os.waitpid(pid, 0)
    assert os.waitstatus_to_exitcode(status) == 0, msg


@pytest.mark.skipif(os.name == "nt", reason="POSIX permission bits")
def test_read_only_dir_keeps_value_in_memory():
    """Runs as root too (CI): then in a child process that has dropped its privileges."""
    base = Path(tempfile.mkdtemp(prefix="sam-ro-"))  # /tmp: reachable by an unprivileged user
    ro = base / "ro"
    ro.mkdir()
    ro.chmod(0o555)
    base.chmod(0o755)

    def check():
        records = []
        handler = logging.Handler()
        handler.emit = records.append
        logger = logging.getLogger("sam_engine.embedding_cache")
        logger.addHandler(handler)
        try:
            cache = EmbeddingCache(disk_dir=ro)
            cache.put("k", _value())
        finally:
            logger.removeHandler(handler)
        text = " ".join(r.getMessage() for r in records)
        assert "writable" in text and str(ro) in text, text
        assert cache.stats.disk_errors == 1
        assert _same(cache.get("k"), _value())
        assert not list(ro.iterdir())

    try:
        if hasattr(os, "geteuid") and os.geteuid() == 0:
            _as_unprivileged_user(check)
        else:
            check()
    finally:
        ro.chmod(0o755)
        shutil.rmtree(base, ignore_errors=True)


def test_unwritable_disk_dir_path_keeps_value_in_memory(tmp_path, caplog):
    blocker = tmp_path / "file"
    blocker.write_text("x")  # a file where the cache folder should be: works even as root
    cache = EmbeddingCache(disk_dir=blocker / "cache")
    with caplog.at_level(logging.WARNING, logger="sam_engine.embedding_cache"):
        cache.put("k", _value())
    assert str(blocker / "cache") in caplog.text and cache.stats.disk_errors == 1
    assert _same(cache.get("k"), _value())


def test_prune_by_max_disk_bytes_removes_least_recently_used(tmp_path):
    writer = EmbeddingCache(disk_dir=tmp_path)
    for i, k in enumerate("abc"):
        writer.put(k, _value(i))
    file_size = _files(tmp_path)[0].stat().st_size
    for age, k in zip((300, 100, 200), "abc", strict=True):  # b newest, then c, then a
        t = 1_000_000 - age
        os.utime(writer._path(k), (t, t))
    cache = EmbeddingCache(disk_dir=tmp_path, max_disk_bytes=3 * file_size)
    cache.put("d", _value(3))  # 4 files > bound: the oldest (a) goes
    assert not writer._path("a").exists()
    assert all(writer._path(k).exists() for k in "bcd")
    cold = EmbeddingCache(disk_dir=tmp_path, max_disk_bytes=3 * file_size)
    assert cold.get("c") is not None  # touched: now newer than b
    cold.put("e", _value(4))
    assert not writer._path("b").exists() and writer._path("c").exists()


def test_concurrent_put_and_get(tmp_path):
    size = _nbytes(_value())
    cache = EmbeddingCache(max_bytes=6 * size, disk_dir=tmp_path)
    keys = [f"k{i}" for i in range(12)]
    errors: list[BaseException] = []

    def worker(seed: int) -> None:
        try:
            rng = np.random.default_rng(seed)
            for _ in range(60):
                i = int(rng.integers(len(keys)))
                if rng.random() < 0.5:
                    cache.put(keys[i], _value(i))
                else:
                    got = cache.get(keys[i])
                    assert got is None or _same(got, _value(i))
        except BaseException as exc:  # reported by the main thread
            errors.append(exc)

    threads = [threading.Thread(target=worker, args=(s,)) for s in range(4)]
    for t in threads:
        t.start()
    for t in threads:
        t.join()
    assert not errors
    s = cache.stats
    assert s.bytes_in_memory <= 6 * size and s.disk_errors == 0
    assert s.bytes_in_memory == len(cache) * size
    for i, k in enumerate(keys):
        got = EmbeddingCache(disk_dir=tmp_path).get(k)
        assert got is None or _same(got, _value(i))


# -------------------------------------------------------------- key, dirs
def test_cache_key_combines_digest_model_and_version():
    k = cache_key("d1", "vit_b")
    assert "d1" in k and "vit_b" in k and PREPROCESS_VERSION in k
    assert k != cache_key("d2", "vit_b") != cache_key("d1", "vit_l")
    assert cache_key("d1", "vit_b", extra="x") != k


def test_default_cache_dir(monkeypatch, tmp_path):
    monkeypatch.setenv("SAM_INSPECT_CACHE", str(tmp_path / "c"))
    assert default_cache_dir() == tmp_path / "c"
    monkeypatch.delenv("SAM_INSPECT_CACHE")
    d = default_cache_dir()
    assert d.parts[-2:] == ("sam-inspect", "embeddings") and d.is_absolute()
