"""`brlm data list|get`: the downloader against a local HTTP server (Range support, checksum,
resume) serving a small Fake.br-shaped archive built here."""

import hashlib
import io
import json
import threading
import zipfile
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer

import pytest

from brlm.data import catalogue
from brlm.errors import DataError

from .conftest import run_cli


def fake_archive() -> bytes:
    buf = io.BytesIO()
    with zipfile.ZipFile(buf, "w") as z:
        for n in (1, 2):
            for label in ("true", "fake"):
                z.writestr(f"Fake.br-Corpus-master/full_texts/{label}/{n}.txt", f"Notícia {label} número {n}. " * 30)
                z.writestr(f"Fake.br-Corpus-master/full_texts/{label}-meta-information/{n}-meta.txt",
                           f"autor {n}\nhttps://exemplo.com.br/{label}/{n}\npolitica\n2018-0{n}-10\n{100 + n}\n")
        z.writestr("Fake.br-Corpus-master/README.md", "x" * 5000)
    return buf.getvalue()


class Server:
    def __init__(self, payload: bytes):
        self.payload, self.requests = payload, []
        outer = self

        class Handler(BaseHTTPRequestHandler):
            def do_GET(self):  # noqa: N802 (http.server's naming)
                rng = self.headers.get("Range")
                outer.requests.append(rng)
                data, status = outer.payload, 200
                if rng:
                    start = int(rng.split("=")[1].split("-")[0])
                    data, status = outer.payload[start:], 206
                self.send_response(status)
                self.send_header("Content-Length", str(len(data)))
                self.end_headers()
                self.wfile.write(data)

            def log_message(self, *a):
                pass

        self.httpd = ThreadingHTTPServer(("127.0.0.1", 0), Handler)
        self.url = f"http://127.0.0.1:{self.httpd.server_address[1]}/master.zip"
        threading.Thread(target=self.httpd.serve_forever, daemon=True).start()

    def close(self):
        self.httpd.shutdown()


@pytest.fixture
def server():
    s = Server(fake_archive())
    yield s
    s.close()


def test_get_fakebr_resumes_verifies_and_unpacks(tmp_path, server):
    sha = hashlib.sha256(server.payload).hexdigest()
    folder = tmp_path / "fakebr"
    folder.mkdir()
    (folder / "archive.zip.part").write_bytes(server.payload[:1000])  # an interrupted earlier download
    out = catalogue.get("fakebr", cache_dir=str(tmp_path), url=server.url, sha256=sha)
    assert server.requests == ["bytes=1000-"]
    assert (folder / "archive.zip").read_bytes() == server.payload
    rows = [json.loads(x) for x in out.read_text(encoding="utf-8").splitlines()]
    assert [r["id"] for r in rows] == ["true-1", "fake-1", "true-2", "fake-2"]
    assert rows[0]["author"] == "autor 1" and rows[0]["category"] == "politica" and rows[0]["pair"] == 1
    assert rows[1]["url"] == "https://exemplo.com.br/fake/1" and rows[1]["label"] == "fake"
    catalogue.get("fakebr", cache_dir=str(tmp_path), url=server.url, sha256=sha)
    assert len(server.requests) == 1  # already complete and verified: no new download


def test_checksum_mismatch_removes_partial(tmp_path, server):
    with pytest.raises(DataError, match="does not match the expected"):
        catalogue.get("fakebr", cache_dir=str(tmp_path), url=server.url, sha256="0" * 64)
    assert not list((tmp_path / "fakebr").glob("archive.zip*"))


def test_unpinned_checksum_is_recorded_then_enforced(tmp_path, server):
    catalogue.download(server.url, tmp_path / "a.zip")
    recorded = (tmp_path / "a.zip.sha256").read_text().strip()
    assert recorded == hashlib.sha256(server.payload).hexdigest()
    server.payload = server.payload[:-10] + b"0123456789"  # the archive changed upstream
    (tmp_path / "a.zip").unlink()
    with pytest.raises(DataError, match="does not match"):
        catalogue.download(server.url, tmp_path / "a.zip")


def test_cli_list_get_and_unreachable(tmp_path, server):
    r = run_cli("data", "list", check=True)
    assert all(name in r.stdout for name in ("fakebr", "brwac", "canarim"))
    r = run_cli("data", "get", "fakebr", "--cache-dir", str(tmp_path), "--url", server.url, check=True)
    assert r.stdout.strip().endswith("news.jsonl")
    r = run_cli("data", "get", "fakebr", "--cache-dir", str(tmp_path / "b"), "--url", "http://127.0.0.1:9/nada.zip")
    assert r.returncode == 2 and "cannot download" in r.stderr.strip().splitlines()[-1]
    r = run_cli("data", "get", "nada")
    assert r.returncode == 2 and "not in the catalogue" in r.stderr


def test_hub_entry_offline_is_one_line_error(tmp_path, monkeypatch):
    pytest.importorskip("datasets")
    monkeypatch.setenv("HF_HUB_OFFLINE", "1")
    monkeypatch.setenv("HF_DATASETS_OFFLINE", "1")
    r = run_cli("data", "get", "canarim", "--cache-dir", str(tmp_path))
    last = r.stderr.strip().splitlines()[-1]
    assert r.returncode == 2 and "hf:dominguesm/Canarim-Instruct-PTBR-Dataset: cannot reach the Hugging Face hub" in last
