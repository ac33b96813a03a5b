"""Fetching by URI: local paths, pvc mounts, and https against a real TLS server on loopback."""

import http.server
import ssl
import threading

import pytest
import trustme

from modelfleet.errors import PermanentError, RetryableError, SourceError
from modelfleet.store import atomic_write_text, fetch, read_text, resolve_local

PAYLOAD = b"model bytes " * 1000


class Handler(http.server.BaseHTTPRequestHandler):
    def do_GET(self):
        if self.path == "/model.pt":
            self.send_response(200)
            self.send_header("Content-Length", str(len(PAYLOAD)))
            self.end_headers()
            self.wfile.write(PAYLOAD)
        else:
            self.send_error(503 if self.path == "/busy" else 404)

    def log_message(self, *args):
        pass


@pytest.fixture(scope="module")
def https_server(tmp_path_factory):
    """A real HTTPS server on 127.0.0.1 with a throwaway CA that the client is told to trust."""
    ca = trustme.CA()
    cert = ca.issue_cert("127.0.0.1")
    context = ssl.SSLContext(ssl.PROTOCOL_TLS_SERVER)
    cert.configure_cert(context)
    server = http.server.ThreadingHTTPServer(("127.0.0.1", 0), Handler)
    server.socket = context.wrap_socket(server.socket, server_side=True)
    threading.Thread(target=server.serve_forever, daemon=True).start()
    ca_file = tmp_path_factory.mktemp("ca") / "ca.pem"
    ca.cert_pem.write_to_path(str(ca_file))
    yield f"https://127.0.0.1:{server.server_address[1]}", ca_file
    server.shutdown()


@pytest.fixture
def trusting(https_server, monkeypatch):
    url, ca_file = https_server
    monkeypatch.setenv("SSL_CERT_FILE", str(ca_file))  # OpenSSL reads it when urllib builds its context
    return url


def test_https_download_lands_complete(trusting, tmp_path):
    path = fetch(f"{trusting}/model.pt", tmp_path)
    assert path.read_bytes() == PAYLOAD
    assert [p.name for p in tmp_path.iterdir()] == ["model.pt"]  # no .part file left behind


@pytest.mark.parametrize(("path", "error", "message"), [
    ("/missing.pt", SourceError, "HTTP 404"),
    ("/busy", RetryableError, "HTTP 503"),
])
def test_https_errors_are_classified(trusting, tmp_path, path, error, message):
    with pytest.raises(error, match=message):
        fetch(f"{trusting}{path}", tmp_path)
    assert list(tmp_path.iterdir()) == []


def test_untrusted_certificate_is_refused_as_retryable(https_server, tmp_path, monkeypatch):
    monkeypatch.delenv("SSL_CERT_FILE", raising=False)
    with pytest.raises(RetryableError, match="CERTIFICATE_VERIFY_FAILED"):
        fetch(f"{https_server[0]}/model.pt", tmp_path)


def test_dead_server_is_retryable(tmp_path):
    with pytest.raises(RetryableError, match="could not download"):
        fetch("https://127.0.0.1:9/model.pt", tmp_path)


def test_local_uris(tmp_path, monkeypatch):
    monkeypatch.setenv("MODELFLEET_PVC_ROOT", str(tmp_path))
    assert resolve_local("pvc://models/digits/m.pt") == tmp_path / "models/digits/m.pt"
    assert resolve_local("file://data/x.npz", tmp_path) == tmp_path / "data/x.npz"
    assert resolve_local("file:///abs/x.npz", tmp_path).as_posix() == "/abs/x.npz"
    assert resolve_local("https://host/x") is None
    with pytest.raises(PermanentError, match="pvc://<claim>/<path>"):
        resolve_local("pvc://only-claim")
    with pytest.raises(PermanentError, match="unsupported URI scheme"):
        fetch("ftp://host/key", tmp_path)
    with pytest.raises(PermanentError, match=r"expected s3://<bucket>/<key>"):
        fetch("s3://bucket-only", tmp_path)


def test_read_text_is_none_for_an_absent_local_file(tmp_path, monkeypatch):
    monkeypatch.setenv("MODELFLEET_PVC_ROOT", str(tmp_path))
    (tmp_path / "claim").mkdir()
    (tmp_path / "claim" / "result.json").write_text("{}")
    assert read_text("pvc://claim/result.json") == "{}"
    assert read_text(f"file://{tmp_path}/claim/missing.json") is None


def test_atomic_write_replaces_whole_files(tmp_path):
    target = tmp_path / "result.json"
    atomic_write_text(target, "old")
    atomic_write_text(target, "new")
    assert target.read_text() == "new"
    assert [p.name for p in tmp_path.iterdir()] == ["result.json"]
