"""KafkaSettings' security side without a broker: the SASL password is a secret (never in a repr,
a log line or an error), can come from a file, and every client (aiokafka's and faust's) gets the
same TLS context built from the CA/certificate settings."""

from __future__ import annotations

import asyncio
import logging
import shutil
import ssl
from pathlib import Path

import pytest
from aiokafka.admin import AIOKafkaAdminClient

from streams.broker import make_ca_and_cert
from streams.settings import KafkaSettings, KafkaSettingsError

SECRET = "s3cr3t-pa55word"


@pytest.fixture(scope="module")
def tls(tmp_path_factory: pytest.TempPathFactory) -> Path:
    """A CA and a certificate signed by it, made as the local SASL_SSL broker makes them."""
    if shutil.which("openssl") is None:
        pytest.skip("openssl is not installed")
    folder = tmp_path_factory.mktemp("tls")
    make_ca_and_cert(folder, "127.0.0.1")
    return folder


def secure(**over: object) -> KafkaSettings:
    base: dict[str, object] = {
        "bootstrap": "127.0.0.1:1",
        "security_protocol": "SASL_SSL",
        "sasl_mechanism": "SCRAM-SHA-512",
        "sasl_username": "ann",
        "sasl_password": SECRET,
    }
    return KafkaSettings.model_validate({**base, **over})


def test_the_password_never_shows_in_repr_str_or_logs(caplog: pytest.LogCaptureFixture) -> None:
    settings = secure()
    with caplog.at_level(logging.DEBUG):
        logging.getLogger("test").info("settings: %s / %r", settings, settings)
    for text in (repr(settings), str(settings), caplog.text, settings.model_dump_json()):
        assert SECRET not in text
    assert settings.password() == SECRET


def test_the_password_comes_from_a_file_from_the_environment(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    secret_file = tmp_path / "password"
    secret_file.write_text(SECRET + "\n")
    monkeypatch.setenv("INTEREST_KAFKA_SASL_PASSWORD_FILE", str(secret_file))
    monkeypatch.setenv("INTEREST_KAFKA_SASL_PASSWORD", "ignored-when-a-file-is-given")
    settings = KafkaSettings(sasl_mechanism="SCRAM-SHA-512", sasl_username="ann")
    assert settings.client_kwargs()["sasl_plain_password"] == SECRET
    assert SECRET not in repr(settings)


def test_an_unreadable_password_file_is_one_line_without_a_secret(tmp_path: Path) -> None:
    settings = secure(sasl_password_file=tmp_path / "missing")
    with pytest.raises(KafkaSettingsError) as err:
        settings.client_kwargs()
    message = str(err.value)
    assert "\n" not in message and "missing" in message and SECRET not in message


def test_every_aiokafka_client_gets_a_tls_context_under_ssl(tls: Path) -> None:
    """The bug this fixes: aiokafka refused SSL/SASL_SSL ("ssl_context is mandatory")."""
    for protocol in ("SSL", "SASL_SSL"):
        kwargs = secure(security_protocol=protocol, ssl_cafile=tls / "ca.pem").client_kwargs()
        context = kwargs["ssl_context"]
        assert isinstance(context, ssl.SSLContext)
        assert context.verify_mode == ssl.CERT_REQUIRED and context.check_hostname
        asyncio.run(build_admin(kwargs))  # raised "ssl_context is mandatory" before
    assert secure(security_protocol="SASL_PLAINTEXT").ssl_context() is None
    assert "ssl_context" not in KafkaSettings(bootstrap="127.0.0.1:1").client_kwargs()


async def build_admin(kwargs: dict[str, object]) -> None:
    admin = AIOKafkaAdminClient(**kwargs)
    await admin.close()


def test_the_ca_setting_decides_which_certificates_are_trusted(tls: Path) -> None:
    ours = secure(ssl_cafile=tls / "ca.pem").ssl_context()
    system = secure().ssl_context()
    assert ours is not None and system is not None
    ca_names = [dict(x[0] for x in c["subject"])["commonName"] for c in ours.get_ca_certs()]
    assert ca_names == ["interest-stream local CA"]
    assert "interest-stream local CA" not in str(system.get_ca_certs())
    relaxed = secure(ssl_cafile=tls / "ca.pem", ssl_check_hostname=False).ssl_context()
    assert relaxed is not None and not relaxed.check_hostname
    assert relaxed.verify_mode == ssl.CERT_REQUIRED  # the chain is still checked


def test_a_client_certificate_is_loaded_and_needs_its_key(tls: Path, tmp_path: Path) -> None:
    pem = tls / "broker.pem"  # key + certificate in one file, as Kafka's PEM keystore wants
    assert secure(ssl_certfile=pem, ssl_keyfile=pem).ssl_context() is not None
    with pytest.raises(KafkaSettingsError, match="go together"):
        secure(ssl_certfile=pem).ssl_context()
    with pytest.raises(KafkaSettingsError) as err:
        secure(ssl_cafile=tmp_path / "no-ca.pem").ssl_context()
    assert "no-ca.pem" in str(err.value) and "\n" not in str(err.value)


def test_the_faust_worker_gets_the_same_credentials(tls: Path) -> None:
    import faust

    from streams.stream.app import _credentials

    settings = secure(ssl_cafile=tls / "ca.pem")
    creds = _credentials(settings)
    assert isinstance(creds, faust.SASLCredentials)
    assert creds.password == SECRET and SECRET not in repr(creds)
    assert creds.ssl_context is not None
    assert creds.ssl_context.get_ca_certs() == settings.ssl_context().get_ca_certs()  # type: ignore[union-attr]
    tls_only = _credentials(secure(security_protocol="SSL", sasl_mechanism=None))
    assert isinstance(tls_only, faust.SSLCredentials)
    assert _credentials(KafkaSettings(bootstrap="127.0.0.1:1")) is None
