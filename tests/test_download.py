"""The downloader against a local HTTP server on 127.0.0.1 (no other network)."""

from __future__ import annotations

import hashlib
import http.server
import socket
import threading
from pathlib import Path

import pytest

from mrc.download import BUNDLES, Bundle, RemoteFile, download_bundle, main
from mrc.errors import MRCError


class _Handler(http.server.BaseHTTPRequestHandler):
    """Serves files from `server.root`; honours `Range: bytes=N-` unless `server.honour_range` is off."""

    def do_GET(self):  # noqa: N802 (http.server's naming)
        path = self.server.root / self.path.lstrip("/")
        self.server.requests.append((self.path, self.headers.get("Range")))
        if not path.is_file():
            self.send_error(404)
            return
        body = path.read_bytes()
        wanted = self.headers.get("Range")
        if wanted and self.server.honour_range:
            start = int(wanted.removeprefix("bytes=").rstrip("-"))
            if start >= len(body):
                self.send_response(416)
                self.send_header("Content-Range", f"bytes */{len(body)}")
                self.end_headers()
                return
            self.send_response(206)
            self.send_header("Content-Range", f"bytes {start}-{len(body) - 1}/{len(body)}")
            body = body[start:]
        else:
            self.send_response(200)
        self.send_header("Content-Length", str(len(body)))
        self.end_headers()
        self.wfile.write(body)

    def log_message(self, *args):
        pass


@pytest.fixture
def server(tmp_path):
    root = tmp_path / "served"
    root.mkdir()
    httpd = http.server.ThreadingHTTPServer(("127.0.0.1", 0), _Handler)
    httpd.root, httpd.honour_range, httpd.requests = root, True, []
    thread = threading.Thread(target=httpd.serve_forever, kwargs={"poll_interval": 0.05}, daemon=True)
    thread.start()
    httpd.url = f"http://127.0.0.1:{httpd.server_address[1]}"
    yield httpd
    httpd.shutdown()
    httpd.server_close()


def _publish(server, name: str, data: bytes) -> RemoteFile:
    (server.root / name).write_bytes(data)
    return RemoteFile(name, len(data), hashlib.sha256(data).hexdigest())


def _bundle(*files: RemoteFile) -> Bundle:
    return Bundle(name="test", description="test files", base_url="http://unused.invalid",
                  default_dir="unused", files=files, homepage="https://example.invalid")


def _payload(n: int, seed: int = 0) -> bytes:
    return bytes((i * 31 + seed) % 251 for i in range(n))


def test_fresh_download_writes_verified_files_and_no_part(server, tmp_path):
    a, b = _payload(3_000_000), _payload(1234, seed=7)
    bundle = _bundle(_publish(server, "a.json", a), _publish(server, "b.json", b))
    dest = tmp_path / "out"
    done = download_bundle(bundle, dest, base_url=server.url)
    assert (dest / "a.json").read_bytes() == a
    assert (dest / "b.json").read_bytes() == b
    assert set(done) == {"a.json", "b.json"} and all("verified" in v for v in done.values())
    assert not list(dest.glob("*.part"))


def test_resume_continues_a_partial_file_with_range(server, tmp_path):
    data = _payload(500_000)
    bundle = _bundle(_publish(server, "big.bin", data))
    dest = tmp_path / "out"
    dest.mkdir()
    (dest / "big.bin.part").write_bytes(data[:200_000])
    done = download_bundle(bundle, dest, base_url=server.url)
    assert (dest / "big.bin").read_bytes() == data
    assert server.requests == [("/big.bin", "bytes=200000-")]
    assert "resumed at byte 200,000" in done["big.bin"]


def test_resume_restarts_when_server_ignores_range(server, tmp_path):
    data = _payload(300_000)
    bundle = _bundle(_publish(server, "big.bin", data))
    server.honour_range = False
    dest = tmp_path / "out"
    dest.mkdir()
    # A stale prefix that must not survive: appending the full body to it would corrupt the file.
    (dest / "big.bin.part").write_bytes(b"x" * 1000)
    done = download_bundle(bundle, dest, base_url=server.url)
    assert (dest / "big.bin").read_bytes() == data
    assert done["big.bin"] == "downloaded, verified"


def test_complete_part_file_is_verified_and_renamed(server, tmp_path):
    data = _payload(10_000)
    bundle = _bundle(_publish(server, "f.bin", data))
    dest = tmp_path / "out"
    dest.mkdir()
    (dest / "f.bin.part").write_bytes(data)
    download_bundle(bundle, dest, base_url=server.url)
    assert (dest / "f.bin").read_bytes() == data and not (dest / "f.bin.part").exists()


def test_checksum_mismatch_deletes_the_part_and_says_so(server, tmp_path):
    good = _payload(5000)
    expected = _publish(server, "f.json", good)
    (server.root / "f.json").write_bytes(_payload(5000, seed=3))  # same size, other bytes
    dest = tmp_path / "out"
    with pytest.raises(MRCError, match=r"does not match.*sha256.*deleted"):
        download_bundle(_bundle(expected), dest, base_url=server.url)
    assert not (dest / "f.json").exists()
    assert not (dest / "f.json.part").exists()


def test_verified_file_is_skipped_without_a_request(server, tmp_path):
    data = _payload(4096)
    bundle = _bundle(_publish(server, "f.json", data))
    dest = tmp_path / "out"
    dest.mkdir()
    (dest / "f.json").write_bytes(data)
    done = download_bundle(bundle, dest, base_url=server.url)
    assert server.requests == []
    assert done["f.json"] == "verified, kept"


def test_corrupt_existing_file_is_replaced(server, tmp_path):
    data = _payload(4096)
    bundle = _bundle(_publish(server, "f.json", data))
    dest = tmp_path / "out"
    dest.mkdir()
    (dest / "f.json").write_bytes(b"truncated")
    download_bundle(bundle, dest, base_url=server.url)
    assert (dest / "f.json").read_bytes() == data


def _closed_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


def test_offline_error_says_which_files_to_place_where(tmp_path, capsys):
    dest = tmp_path / "kq"
    with pytest.raises(SystemExit) as exit_info:
        main(["korquad", "--dir", str(dest), "--base_url", f"http://127.0.0.1:{_closed_port()}"])
    assert exit_info.value.code == 2
    err = capsys.readouterr().err
    assert "could not download" in err and "offline" in err and "by hand" in err
    for f in BUNDLES["korquad"].files:
        assert f.name in err and f.sha256 in err
    assert str(dest) in err and "re-run" in err.lower()


def test_base_url_env_var_redirects_the_real_bundle(server, tmp_path, monkeypatch, capsys):
    # The official KorQuAD names served with other bytes: the real checksums must reject them.
    (server.root / "KorQuAD_v1.0_train.json").write_bytes(b"{}")
    monkeypatch.setenv("MRC_DOWNLOAD_BASE_URL", server.url)
    with pytest.raises(SystemExit):
        main(["korquad", "--dir", str(tmp_path / "kq")])
    assert server.requests[0][0] == "/KorQuAD_v1.0_train.json"
    assert "size 2 bytes, expected 38,527,475" in capsys.readouterr().err
    assert not (tmp_path / "kq" / "KorQuAD_v1.0_train.json").exists()


def test_missing_file_on_server_names_the_http_status(server, tmp_path):
    bundle = _bundle(RemoteFile("absent.json", 10, None))
    with pytest.raises(MRCError, match="HTTP 404"):
        download_bundle(bundle, tmp_path / "out", base_url=server.url)
