"""Client options for every security setting, token providers, and connection errors explained."""

from __future__ import annotations

import base64
import io
import json
import os
import ssl
import time
from pathlib import Path

import pytest
import structlog
from aiokafka.errors import KafkaConnectionError

from bridge.config import CloudflareSettings, KafkaSettings, Settings
from bridge.errors import ConfigError, KafkaRefused, KafkaUnavailable
from bridge.logs import configure
from bridge.pipeline.kafka_io import (
    FileTokenProvider,
    MskIamTokenProvider,
    client_options,
    explain,
    make_producer,
    ssl_context,
)


def test_plaintext_has_no_tls_and_no_sasl() -> None:
    options = client_options(KafkaSettings(bootstrap_servers="b:9092"))
    assert options == {
        "bootstrap_servers": "b:9092",
        "client_id": "workflows-bridge",
        "security_protocol": "PLAINTEXT",
    }


def test_ssl_context_checks_hostnames_unless_told_not_to(tmp_path: Path) -> None:
    context = ssl_context(KafkaSettings(bootstrap_servers="b:9093", security_protocol="SSL"))
    assert context is not None
    assert context.check_hostname
    assert context.verify_mode == ssl.CERT_REQUIRED
    relaxed = ssl_context(
        KafkaSettings(bootstrap_servers="b:9093", security_protocol="SSL", ssl_check_hostname=False)
    )
    assert relaxed is not None
    assert not relaxed.check_hostname
    assert relaxed.verify_mode == ssl.CERT_REQUIRED


def test_unloadable_tls_files_are_config_errors_naming_the_variable(tmp_path: Path) -> None:
    with pytest.raises(ConfigError, match="BRIDGE_KAFKA__SSL_CAFILE: cannot load"):
        ssl_context(
            KafkaSettings(
                bootstrap_servers="b:9093",
                security_protocol="SSL",
                ssl_cafile=tmp_path / "absent.pem",
            )
        )
    garbage = tmp_path / "cert.pem"
    garbage.write_text("not a certificate")
    with pytest.raises(ConfigError, match="BRIDGE_KAFKA__SSL_CERTFILE"):
        ssl_context(
            KafkaSettings(bootstrap_servers="b:9093", security_protocol="SSL", ssl_certfile=garbage)
        )


@pytest.mark.parametrize("mechanism", ["PLAIN", "SCRAM-SHA-256", "SCRAM-SHA-512"])
def test_password_mechanisms(mechanism: str) -> None:
    options = client_options(
        KafkaSettings(
            bootstrap_servers="b:9094",
            security_protocol="SASL_SSL",
            sasl_mechanism=mechanism,
            sasl_username="u",
            sasl_password="p",
        )
    )
    assert options["sasl_mechanism"] == mechanism
    assert (options["sasl_plain_username"], options["sasl_plain_password"]) == ("u", "p")
    assert isinstance(options["ssl_context"], ssl.SSLContext)


async def test_token_file_is_reread_only_when_it_changes(tmp_path: Path) -> None:
    path = tmp_path / "token"
    path.write_text("first-token\n")
    provider = FileTokenProvider(path)
    assert await provider.token() == "first-token"
    path.write_text("second-token-which-is-longer")
    assert await provider.token() == "second-token-which-is-longer"
    stat = path.stat()
    # Same size and mtime: the provider keeps what it read (no read per connection).
    path.write_text("third-token-which-is-longer!"[:28])
    os.utime(path, ns=(stat.st_atime_ns, stat.st_mtime_ns))
    assert await provider.token() == "second-token-which-is-longer"
    path.unlink()
    with pytest.raises(KafkaRefused, match="BRIDGE_KAFKA__SASL_OAUTH_TOKEN_FILE"):
        await provider.token()


async def test_oauth_token_is_redacted_from_logs(tmp_path: Path) -> None:
    path = tmp_path / "token"
    path.write_text("eyJhbGciOi.secret-claims.")
    stream = io.StringIO()
    configure(fmt="json", stream=stream)
    try:
        token = await FileTokenProvider(path).token()
        structlog.get_logger("t").info("connecting", detail=f"sent {token}")
    finally:
        structlog.reset_defaults()
    assert "secret-claims" not in stream.getvalue()
    assert json.loads(stream.getvalue())["detail"] == "sent [redacted]"


async def test_msk_iam_signs_a_token_with_aws_credentials(
    monkeypatch: pytest.MonkeyPatch,
) -> None:
    # Static credentials: the signer works offline (a SigV4 presigned URL, no request).
    monkeypatch.setenv("AWS_ACCESS_KEY_ID", "AKIDEXAMPLE")
    monkeypatch.setenv("AWS_SECRET_ACCESS_KEY", "not-a-real-secret")
    monkeypatch.setenv("AWS_EC2_METADATA_DISABLED", "true")
    options = client_options(
        KafkaSettings(
            bootstrap_servers="b-1.msk:9098",
            security_protocol="SASL_SSL",
            sasl_mechanism="AWS_MSK_IAM",
            aws_region="eu-west-1",
        )
    )
    assert options["sasl_mechanism"] == "OAUTHBEARER"
    provider = options["sasl_oauth_token_provider"]
    assert isinstance(provider, MskIamTokenProvider)
    token = await provider.token()
    assert token
    assert await provider.token() == token  # reused until close to its expiry
    url = base64.urlsafe_b64decode(token + "=" * (-len(token) % 4)).decode()
    assert url.startswith("https://kafka.eu-west-1.amazonaws.com/")
    assert "Action=kafka-cluster%3AConnect" in url
    assert "X-Amz-Signature=" in url
    assert provider._expires > time.time()


def _sasl() -> KafkaSettings:
    return KafkaSettings(
        bootstrap_servers="b:9094",
        security_protocol="SASL_SSL",
        sasl_mechanism="SCRAM-SHA-512",
        sasl_username="bridge",
        sasl_password="pw",
    )


def test_connection_failures_are_explained() -> None:
    bare = KafkaConnectionError("Unable to bootstrap from [('b', 9094)]")
    refused = explain(
        _sasl(),
        "cannot start",
        bare,
        ['Unable connect to "b:9094": [Error 58] SaslAuthenticationFailed: bad creds'],
    )
    assert isinstance(refused, KafkaRefused)
    assert "refused the SASL credentials (SCRAM-SHA-512, user 'bridge')" in str(refused)
    untrusted = explain(
        _sasl(),
        "cannot start",
        bare,
        [
            'Unable connect to "b:9094": [SSL: CERTIFICATE_VERIFY_FAILED] certificate verify '
            "failed: self-signed certificate in certificate chain (_ssl.c:1006)"
        ],
    )
    assert isinstance(untrusted, KafkaRefused)
    assert "not trusted (self-signed certificate in certificate chain)" in str(untrusted)
    assert "BRIDGE_KAFKA__SSL_CAFILE" in str(untrusted)
    down = explain(_sasl(), "cannot start", bare, [])
    assert type(down) is KafkaUnavailable
    assert "Unable to bootstrap" in str(down)


async def test_producer_waits_out_outages_and_transactions_time_out_as_set() -> None:
    settings = Settings(
        kafka=KafkaSettings(
            bootstrap_servers="unused:9092",
            transactional_id="t",
            delivery_timeout_ms=90_000,
            transaction_timeout_ms=20_000,
        ),
        cloudflare=CloudflareSettings(account_id="a", api_token="t"),
    )
    producer = make_producer(settings)
    # aiokafka keeps both where its sender and transaction manager read them
    assert producer._request_timeout_ms == 90_000
    assert producer._txn_manager.transaction_timeout_ms == 20_000
    plain = make_producer(
        settings.model_copy(update={"kafka": KafkaSettings(bootstrap_servers="unused:9092")})
    )
    assert plain._request_timeout_ms == 120_000  # the default rides out a two-minute outage
    await producer.stop()
    await plain.stop()
