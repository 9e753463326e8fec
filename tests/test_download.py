"""Downloads against a local HTTP server on 127.0.0.1 (never the internet)."""

from __future__ import annotations

import hashlib
import json
import re
import socket
import threading
from collections import namedtuple
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer

import numpy as np
import pytest

from sam_engine.errors import DownloadError
from sam_engine.weights import download as dl
from sam_engine.weights import file_hash
from sam_engine.weights.download import download, part_path

SIZE = 3 * 2**20 + 12345
PAYLOAD = np.random.default_rng(0).bytes(SIZE)
SHA = hashlib.sha256(PAYLOAD).hexdigest()
MiB = 2**20


class _Handler(BaseHTTPRequestHandler):
    protocol_version = "HTTP/1.1"

    def do_GET(self):  # noqa: N802 - http.server's naming
        srv = self.server
        rng = self.headers.get("Range")
        srv.ranges.append(rng)
        if self.path != "/file.bin":
            self.send_error(404, "Not Found")
            return
        data, start = srv.payload, 0
        m = re.fullmatch(r"bytes=(\d+)-", rng or "")
        if m and srv.honour_range:
            start = int(m.group(1))
            if start >= len(data):
                self.send_response(416)
                self.send_header("Content-Range", f"bytes */{len(data)}")
                self.send_header("Content-Length", "0")
                self.end_headers()
                return
            self.send_response(206)
            self.send_header("Content-Range", f"bytes {start}-{len(data) - 1}/{len(data)}")
        else:
            self.send_response(200)
        body = data[start:]
        self.send_header("Content-Length", str(len(body)))
        self.send_header("Content-Type", "application/octet-stream")
        self.end_headers()
        if srv.cut_after is not None:  # send part of the body, then drop the connection
            body = body[: srv.cut_after]
            self.close_connection = True
        self.wfile.write(body)
        srv.sent += len(body)

    def log_message(self, *args):
        pass


class _QuietServer(ThreadingHTTPServer):
    daemon_threads = True

    def handle_error(self, request, client_address):
        pass  # a client that hangs up early (size check, refused resume) is expected here


Server = namedtuple("Server", "url httpd")


@pytest.fixture(autouse=True)
def no_proxy(monkeypatch):
    for name in ("http_proxy", "HTTP_PROXY", "https_proxy", "HTTPS_PROXY", "all_proxy",
                 "ALL_PROXY"):
        monkeypatch.delenv(name, raising=False)
    monkeypatch.setenv("no_proxy", "*")
    monkeypatch.setenv("NO_PROXY", "*")


@pytest.fixture
def server():
    httpd = _QuietServer(("127.0.0.1", 0), _Handler)
    httpd.payload, httpd.honour_range, httpd.cut_after = PAYLOAD, True, None
    httpd.ranges, httpd.sent = [], 0
    thread = threading.Thread(target=httpd.serve_forever, args=(0.02,), daemon=True)
    thread.start()
    yield Server(f"http://127.0.0.1:{httpd.server_address[1]}/file.bin", httpd)
    httpd.shutdown()
    httpd.server_close()
    thread.join(timeout=5)


@pytest.fixture(autouse=True)
def hash_cache(tmp_path, monkeypatch):
    monkeypatch.setenv("SAM_INSPECT_CACHE", str(tmp_path / "cache"))


def test_full_download(server, tmp_path):
    dest = tmp_path / "sub" / "model.pth"
    assert download(server.url, dest, SIZE, SHA, progress=False) == dest
    assert dest.read_bytes() == PAYLOAD
    assert not part_path(dest).exists()
    assert server.httpd.ranges == [None] and server.httpd.sent == SIZE
    # recorded in the hash cache (not beside the file): verifying it later needs no re-hash
    records = json.loads(file_hash.hash_cache_path().read_text())
    remembered = records[str(dest.resolve())]
    assert remembered["sha256"] == SHA and remembered["size"] == SIZE
    assert remembered["mtime_ns"] == dest.stat().st_mtime_ns
    assert not dest.with_name(dest.name + ".sha256.json").exists()


def test_resume_sends_only_the_rest(server, tmp_path):
    dest = tmp_path / "model.pth"
    part_path(dest).write_bytes(PAYLOAD[:MiB])
    download(server.url, dest, SIZE, SHA, progress=False)
    assert server.httpd.ranges == [f"bytes={MiB}-"]
    assert server.httpd.sent == SIZE - MiB
    assert dest.read_bytes() == PAYLOAD


def test_interrupted_download_resumes_on_the_next_run(server, tmp_path):
    dest = tmp_path / "model.pth"
    server.httpd.cut_after = MiB
    with pytest.raises(DownloadError, match="run the same command again to resume") as err:
        download(server.url, dest, SIZE, SHA, progress=False, timeout=10)
    assert server.url in str(err.value)
    kept = part_path(dest).stat().st_size
    assert 0 < kept <= MiB and not dest.exists()
    server.httpd.cut_after = None
    download(server.url, dest, SIZE, SHA, progress=False)
    assert server.httpd.ranges[-1] == f"bytes={kept}-"
    assert dest.read_bytes() == PAYLOAD


def test_server_ignoring_range_restarts(server, tmp_path, caplog):
    server.httpd.honour_range = False
    dest = tmp_path / "model.pth"
    part_path(dest).write_bytes(b"\xff" * MiB)  # wrong bytes: must not survive
    with caplog.at_level("INFO", logger="sam_engine.weights.download"):
        download(server.url, dest, SIZE, SHA, progress=False)
    assert server.httpd.ranges == [f"bytes={MiB}-"] and server.httpd.sent == SIZE
    assert dest.read_bytes() == PAYLOAD
    assert any("ignored the resume request" in r.getMessage() for r in caplog.records)


def test_complete_part_needs_no_request(server, tmp_path):
    dest = tmp_path / "model.pth"
    part_path(dest).write_bytes(PAYLOAD)
    download(server.url, dest, SIZE, SHA, progress=False)
    assert server.httpd.ranges == [] and dest.read_bytes() == PAYLOAD


def test_complete_destination_is_not_downloaded_again(server, tmp_path):
    dest = tmp_path / "model.pth"
    dest.write_bytes(PAYLOAD)
    assert download(server.url, dest, SIZE, SHA, progress=False) == dest
    assert server.httpd.ranges == []
    dest.write_bytes(PAYLOAD[:-1] + bytes([PAYLOAD[-1] ^ 0xFF]))  # damaged: replaced
    download(server.url, dest, SIZE, SHA, progress=False)
    assert server.httpd.ranges == [None] and dest.read_bytes() == PAYLOAD


def test_oversized_part_starts_again(server, tmp_path):
    dest = tmp_path / "model.pth"
    part_path(dest).write_bytes(PAYLOAD + b"extra")
    download(server.url, dest, SIZE, SHA, progress=False)
    assert server.httpd.ranges == [None] and dest.read_bytes() == PAYLOAD


def test_checksum_failure_installs_nothing(server, tmp_path):
    dest = tmp_path / "model.pth"
    wrong = "0" * 64
    with pytest.raises(DownloadError) as err:
        download(server.url, dest, SIZE, wrong, progress=False)
    msg = str(err.value)
    assert server.url in msg and str(dest) in msg and wrong in msg and SHA in msg
    assert not dest.exists() and not part_path(dest).exists()


def test_size_mismatch_installs_nothing(server, tmp_path):
    dest = tmp_path / "model.pth"
    with pytest.raises(DownloadError, match=f"{SIZE:,} bytes, expected {SIZE + 10:,}") as err:
        download(server.url, dest, SIZE + 10, None, progress=False)
    assert server.url in str(err.value)
    assert not dest.exists() and not part_path(dest).exists()


def test_unknown_size_and_hash_still_download(server, tmp_path):
    dest = tmp_path / "model.pth"
    download(server.url, dest, None, None, progress=False)
    assert dest.read_bytes() == PAYLOAD


def test_http_error(server, tmp_path):
    url = server.url.replace("file.bin", "missing.bin")
    with pytest.raises(DownloadError, match="HTTP 404") as err:
        download(url, tmp_path / "model.pth", SIZE, SHA, progress=False)
    assert url in str(err.value)


def test_connection_refused(tmp_path):
    with socket.socket() as s:  # a port nobody listens on once closed
        s.bind(("127.0.0.1", 0))
        port = s.getsockname()[1]
    url = f"http://127.0.0.1:{port}/file.bin"
    with pytest.raises(DownloadError) as err:
        download(url, tmp_path / "model.pth", SIZE, SHA, progress=False, timeout=5)
    msg = str(err.value)
    assert url in msg and "run the same command again to resume" in msg
    assert not (tmp_path / "model.pth").exists()


def test_not_enough_disk_space(server, tmp_path, monkeypatch):
    usage = namedtuple("usage", "total used free")
    monkeypatch.setattr(dl.shutil, "disk_usage", lambda p: usage(10 * MiB, 10 * MiB, MiB))
    with pytest.raises(DownloadError, match="not enough free disk space") as err:
        download(server.url, tmp_path / "model.pth", SIZE, SHA, progress=False)
    assert str(tmp_path) in str(err.value) and "--dir" in str(err.value)
    assert server.httpd.ranges == []  # refused before any request
