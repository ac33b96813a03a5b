"""Fetching by URI: local paths, pvc mounts, and https against a real TLS server on loopback."""

import http.server
import ssl
import threading

import pytest
import trustme

from modelfleet.errors import PermanentError, RetryableError, SourceError
from modelfleet.store import atomic_write_text, fetch, read_text, resolve_local
from modelfleet.store.paths import confined

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


# --- paths from manifests and results stay inside their roots ------------------------------------


@pytest.fixture
def pvc_root(tmp_path, monkeypatch):
    """MODELFLEET_PVC_ROOT with a claim `models` holding m.pt, and a secret beside the root."""
    root = tmp_path / "pvc"
    (root / "models" / "sub").mkdir(parents=True)
    (root / "models" / "m.pt").write_bytes(b"model")
    (tmp_path / "secret").write_text("outside every claim")
    monkeypatch.setenv("MODELFLEET_PVC_ROOT", str(root))
    return root


@pytest.mark.parametrize(("uri", "message"), [
    ("pvc://models/../../secret", "'..', '.' and empty segments are refused"),
    ("pvc://models/sub/../../../secret", "'..', '.' and empty segments are refused"),
    ("pvc://models//etc/passwd", "is absolute"),
    ("pvc://models/./m.pt", "'..', '.' and empty segments are refused"),
    ("pvc://models/m.pt\x00.npz", "NUL character or a backslash"),
    ("pvc://models/..\\..\\secret", "NUL character or a backslash"),
    ("file://../secret", "'..', '.' and empty segments are refused"),
    ("file:///etc/../etc/passwd", "'..', '.' and empty segments are refused"),
])
def test_a_path_that_leaves_its_root_is_refused(pvc_root, uri, message):
    with pytest.raises(SourceError, match=message) as refused:
        resolve_local(uri, pvc_root / "models")
    assert refused.value.reason == "PathEscape"
    assert str(refused.value).startswith(uri.split("\x00")[0])  # the message names the URI


@pytest.mark.parametrize("uri", ["pvc://../secret", "pvc://./models/m.pt", "pvc://Models/m.pt", "pvc://my_claim/m.pt",
                                 "pvc:///secret", "pvc://models", "pvc://models/"])
def test_a_pvc_uri_needs_a_claim_that_is_a_pvc_name_and_a_path(pvc_root, uri):
    with pytest.raises(SourceError, match=r"expected pvc://<claim>/<path>") as refused:
        resolve_local(uri)
    assert refused.value.reason == "InvalidURI"


def test_a_symlink_inside_a_claim_may_not_point_outside_it(pvc_root, tmp_path):
    (pvc_root / "models" / "escape.pt").symlink_to(tmp_path / "secret")
    (pvc_root / "models" / "out").symlink_to(tmp_path)
    (pvc_root / "models" / "alias.pt").symlink_to(pvc_root / "models" / "m.pt")
    for uri in ("pvc://models/escape.pt", "pvc://models/out/secret"):
        with pytest.raises(SourceError, match="through a symlink, outside") as refused:
            fetch(uri, tmp_path / "work")
        assert refused.value.reason == "PathEscape"
    assert fetch("pvc://models/alias.pt", tmp_path / "work").read_bytes() == b"model"  # inside: fine


def test_a_relative_file_uri_stays_inside_the_manifest_directory(tmp_path):
    manifest_dir = tmp_path / "manifests"
    manifest_dir.mkdir()
    (tmp_path / "secret").write_text("outside")
    (manifest_dir / "data").symlink_to(tmp_path)
    with pytest.raises(SourceError, match="through a symlink, outside") as refused:
        fetch("file://data/secret", tmp_path / "work", base_dir=manifest_dir)
    assert refused.value.reason == "PathEscape"


@pytest.mark.parametrize("uri", ["s3://bucket/models/..", "https://127.0.0.1:9/models/.."])
def test_a_download_named_dot_dot_is_refused_before_any_request(uri, tmp_path):
    with pytest.raises(SourceError, match="'..', '.' and empty segments are refused") as refused:
        fetch(uri, tmp_path / "work" / "download")
    assert refused.value.reason == "PathEscape"
    assert not any(tmp_path.rglob("*.part"))


def test_a_device_or_directory_is_not_fetched_as_a_file(tmp_path):
    with pytest.raises(SourceError, match=r"not a regular file \(/dev/zero\)"):
        fetch("file:///dev/zero", tmp_path)
    with pytest.raises(SourceError, match="not a regular file"):
        fetch(f"file://{tmp_path}", tmp_path)


def test_confined_joins_paths_that_stay_inside(tmp_path):
    (tmp_path / "a").mkdir()
    assert confined(tmp_path, "a/b.onnx", "subject") == tmp_path.resolve() / "a" / "b.onnx"
    with pytest.raises(SourceError, match=r"^result\.json: '/etc/passwd' is absolute"):
        confined(tmp_path, "/etc/passwd", "result.json")
