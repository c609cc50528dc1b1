"""Reaching a Qdrant server securely: the API key from a file, TLS verified against the
system's CAs or INTEREST_QDRANT_CA_FILE, and one-line errors when either fails. TLS is checked
against a real local TLS endpoint with a certificate from a CA made here (no Qdrant server can be
installed on this machine; tests/integration/test_qdrant_server.py runs against one when given)."""

from __future__ import annotations

import http.server
import os
import ssl
import subprocess
import sys
import threading
from collections.abc import Iterator
from pathlib import Path

import pytest

from models.config import ConfigFileError
from models.settings import QdrantSettings
from models.store import StoreError
from models.store.base import StoreUnavailableError
from models.store.client import ClientBackend
from streams.broker import make_ca_and_cert

ROOT = Path(__file__).resolve().parents[4]


@pytest.fixture(scope="module")
def tls_server(tmp_path_factory: pytest.TempPathFactory) -> Iterator[tuple[str, Path]]:
    """An HTTPS endpoint on 127.0.0.1 with a certificate signed by a fresh CA: (url, CA file)."""
    folder = tmp_path_factory.mktemp("tls")
    make_ca_and_cert(folder, "127.0.0.1")
    context = ssl.SSLContext(ssl.PROTOCOL_TLS_SERVER)
    context.load_cert_chain(str(folder / "broker.pem"))
    server = http.server.ThreadingHTTPServer(("127.0.0.1", 0), http.server.BaseHTTPRequestHandler)
    server.socket = context.wrap_socket(server.socket, server_side=True)
    thread = threading.Thread(target=server.serve_forever, daemon=True)
    thread.start()
    yield f"https://127.0.0.1:{server.server_address[1]}", folder / "ca.pem"
    server.shutdown()
    server.server_close()


def test_an_untrusted_certificate_is_one_line_naming_the_ca_setting(
    tls_server: tuple[str, Path],
) -> None:
    url, _ca = tls_server
    backend = ClientBackend.connect(url, "a-key", timeout=5)
    with pytest.raises(StoreUnavailableError) as info:
        backend.collection_exists("users")
    message = str(info.value)
    assert "\n" not in message and "a-key" not in message
    assert message.startswith(f"Qdrant at {url} is unreachable: its TLS certificate is not trusted")
    assert message.endswith("set INTEREST_QDRANT_CA_FILE to the CA that signed it")


def test_with_its_ca_the_tls_handshake_succeeds(tls_server: tuple[str, Path]) -> None:
    url, ca = tls_server
    backend = ClientBackend.connect(url, None, timeout=5, ca_file=ca)
    # The endpoint is no Qdrant (it answers 501 to everything): TLS got through, the request
    # itself fails as the server's refusal, not as an unreachable store.
    with pytest.raises(Exception) as info:
        backend.collection_exists("users")
    assert not isinstance(info.value, StoreUnavailableError)
    assert "501" in str(info.value)


def test_a_ca_file_that_is_not_one_is_a_one_line_error(tmp_path: Path) -> None:
    bogus = tmp_path / "ca.pem"
    bogus.write_text("not a certificate\n")
    with pytest.raises(StoreError, match=r"^INTEREST_QDRANT_CA_FILE=.*ca.pem is unusable"):
        ClientBackend.connect("https://127.0.0.1:1", None, timeout=5, ca_file=bogus)


def test_the_api_key_comes_from_a_file_and_never_shows(tmp_path: Path) -> None:
    key_file = tmp_path / "qdrant-key"
    key_file.write_text("s3cret-key\nignored second line\n")
    settings = QdrantSettings(url="https://q:6333", api_key_file=key_file, api_key="env-key")
    assert settings.api_key_value() == "s3cret-key"  # the file wins
    assert "s3cret" not in repr(settings) and "env-key" not in repr(settings)
    assert QdrantSettings(url="https://q:6333", api_key="env-key").api_key_value() == "env-key"
    missing = QdrantSettings(url="https://q:6333", api_key_file=tmp_path / "absent")
    with pytest.raises(ConfigFileError, match=r"^INTEREST_QDRANT_API_KEY_FILE=.*cannot read it"):
        missing.api_key_value()


def test_the_cli_says_it_in_one_line(tls_server: tuple[str, Path], tmp_path: Path) -> None:
    url, _ca = tls_server
    env = {**os.environ, "INTEREST_QDRANT_URL": url, "INTEREST_DATA_DIR": str(tmp_path)}
    done = subprocess.run(
        [sys.executable, "-m", "streams.cli", "store", "info"],
        env=env, cwd=ROOT, capture_output=True, text=True, timeout=120,
    )  # fmt: skip
    assert done.returncode == 1
    assert done.stderr.count("\n") == 1, done.stderr
    assert done.stderr.startswith(f"error: Qdrant at {url} is unreachable: its TLS certificate")
