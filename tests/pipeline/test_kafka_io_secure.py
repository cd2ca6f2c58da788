"""The bridge and its tools over each secured listener of a real Apache Kafka broker.

``scripts/kafka/start-kafka.sh --secure DIR`` starts the broker and writes ``DIR/*.env``; the
bridge is run with those lines exactly as they are. Bad credentials and untrusted certificates
must end the start with a clear line and exit code 1, never a traceback.
"""

from __future__ import annotations

import asyncio
import base64
import json
import sys
import time
from collections.abc import Callable
from pathlib import Path

import pytest
from aiokafka import AIOKafkaConsumer, AIOKafkaProducer

from bridge.config import KafkaSettings
from bridge.local import ensure_topics
from bridge.local.emulator import Emulator
from bridge.pipeline.kafka_io import client_options
from tests.support.bridge_harness import OutputReader, Topics, send_commands
from tests.support.hermetic import without_bridge_variables
from tests.support.kafka_harness import Flavour, KafkaBroker
from tests.support.process_harness import BridgeProcess
from tests.support.secure_kafka import SecureKafka

Namer = Callable[[str], str]

pytestmark = pytest.mark.slow


async def _topics(secure: SecureKafka, unique_name: Namer) -> Topics:
    topics = Topics(commands=unique_name("cmd"), output=unique_name("out"), dlq=unique_name("dlq"))
    await ensure_topics(secure.plaintext, {topics.commands: 1, topics.output: 1, topics.dlq: 1})
    return topics


@pytest.mark.parametrize("listener", ["sasl_ssl", "mtls", "sasl_plaintext"])
async def test_run_with_the_env_file_serves_over_the_listener(
    secure_kafka: SecureKafka, listener: str, unique_name: Namer, tmp_path: Path
) -> None:
    topics = await _topics(secure_kafka, unique_name)
    broker = KafkaBroker(secure_kafka.plaintext, Flavour.APACHE)
    env = secure_kafka.env_file(listener)
    async with (
        Emulator() as emulator,
        OutputReader(secure_kafka.plaintext, topics) as reader,
        BridgeProcess(
            broker,
            emulator,
            topics,
            group=unique_name("g"),
            log_path=tmp_path / "bridge.log",
            extra_env=env,
        ) as bridge,
    ):
        await bridge.wait_running()
        await send_commands(
            secure_kafka.plaintext,
            topics.commands,
            [{"action": "create", "workflow": "wf", "instance_id": f"{listener}-1"}],
        )
        await reader.until(results=1)
        assert reader.results[0]["outcome"] == "ok"
        assert reader.results[0]["instance_id"] == f"{listener}-1"
        assert await bridge.terminate() == 0
    log = (tmp_path / "bridge.log").read_text()
    for secret in ("scram.password", "client.key.password"):
        assert secure_kafka.secret(secret) not in log


async def test_send_takes_the_same_settings(
    secure_kafka: SecureKafka, unique_name: Namer, tmp_path: Path
) -> None:
    topic = unique_name("cmd")
    await ensure_topics(secure_kafka.plaintext, {topic: 1})
    env = {**without_bridge_variables(), **secure_kafka.env_file("sasl_ssl")}
    env["BRIDGE_TOPICS__COMMANDS"] = topic
    command = {"action": "pause", "workflow": "wf", "instance_id": "sent-securely"}
    process = await asyncio.create_subprocess_exec(
        sys.executable,
        "-m",
        "bridge",
        "send",
        json.dumps(command),
        env=env,
        stdout=asyncio.subprocess.PIPE,
        stderr=asyncio.subprocess.STDOUT,
    )
    output, _ = await asyncio.wait_for(process.communicate(), 120)
    assert process.returncode == 0, output.decode()
    consumer = AIOKafkaConsumer(
        topic, bootstrap_servers=secure_kafka.plaintext, auto_offset_reset="earliest"
    )
    await consumer.start()
    try:
        record = await asyncio.wait_for(consumer.getone(), 30)
    finally:
        await consumer.stop()
    assert json.loads(record.value or b"") == command


def _unsigned_jwt(subject: str) -> str:
    def part(data: dict[str, object]) -> str:
        return base64.urlsafe_b64encode(json.dumps(data).encode()).decode().rstrip("=")

    now = int(time.time())
    return f"{part({'alg': 'none'})}.{part({'sub': subject, 'iat': now, 'exp': now + 3600})}."


@pytest.mark.parametrize(
    ("mechanism", "listener"),
    [("PLAIN", "sasl_ssl"), ("SCRAM-SHA-256", "sasl_ssl"), ("PLAIN", "sasl_plaintext")],
)
async def test_password_mechanisms_round_trip(
    secure_kafka: SecureKafka, mechanism: str, listener: str, unique_name: Namer
) -> None:
    plain = mechanism == "PLAIN"
    kafka = KafkaSettings(
        bootstrap_servers=getattr(secure_kafka, listener),
        security_protocol=listener.upper(),
        sasl_mechanism=mechanism,
        sasl_username=secure_kafka.plain_user if plain else secure_kafka.scram_user,
        sasl_password=secure_kafka.secret("plain.password" if plain else "scram.password"),
        ssl_cafile=secure_kafka.tls / "ca.pem" if listener == "sasl_ssl" else None,
    )
    await _round_trip(kafka, secure_kafka, unique_name("t"))


async def test_oauthbearer_token_file_is_reread_when_it_changes(
    secure_kafka: SecureKafka, unique_name: Namer, tmp_path: Path
) -> None:
    token_file = tmp_path / "token"
    token_file.write_text(_unsigned_jwt("first") + "\n")
    kafka = KafkaSettings(
        bootstrap_servers=secure_kafka.sasl_plaintext,
        security_protocol="SASL_PLAINTEXT",
        sasl_mechanism="OAUTHBEARER",
        sasl_oauth_token_file=token_file,
    )
    options = client_options(kafka)
    provider = options["sasl_oauth_token_provider"]
    await _round_trip(kafka, secure_kafka, unique_name("t"), options)
    first = await provider.token()
    token_file.write_text(_unsigned_jwt("second-and-longer"))
    second = await provider.token()
    assert second != first
    assert second == token_file.read_text()
    await _round_trip(kafka, secure_kafka, unique_name("t"), options)


async def _round_trip(
    kafka: KafkaSettings,
    secure: SecureKafka,
    topic: str,
    options: dict[str, object] | None = None,
) -> None:
    await ensure_topics(secure.plaintext, {topic: 1})
    options = options or client_options(kafka)
    producer = AIOKafkaProducer(acks="all", **options)
    await producer.start()
    try:
        await producer.send_and_wait(topic, b"over " + kafka.security_protocol.encode())
    finally:
        await producer.stop()
    consumer = AIOKafkaConsumer(topic, auto_offset_reset="earliest", **options)
    await consumer.start()
    try:
        record = await asyncio.wait_for(consumer.getone(), 30)
    finally:
        await consumer.stop()
    assert record.value == b"over " + kafka.security_protocol.encode()


@pytest.mark.parametrize(
    ("listener", "change", "expected"),
    [
        (
            "sasl_ssl",
            {"BRIDGE_KAFKA__SASL_PASSWORD": "not-the-password"},
            "refused the SASL credentials",
        ),
        (
            "sasl_ssl",
            {"BRIDGE_KAFKA__SSL_CAFILE": "untrusted-ca.pem"},
            "certificate is not trusted",
        ),
        ("mtls", {"BRIDGE_KAFKA__SSL_CAFILE": "untrusted-ca.pem"}, "certificate is not trusted"),
        (
            "mtls",
            {"BRIDGE_KAFKA__SSL_CERTFILE": "untrusted-client.pem"},
            "closed the connection during the TLS handshake",
        ),
    ],
)
async def test_refused_connection_is_one_clear_line_and_exit_code_1(
    secure_kafka: SecureKafka,
    listener: str,
    change: dict[str, str],
    expected: str,
    tmp_path: Path,
) -> None:
    env = {**without_bridge_variables(), **secure_kafka.env_file(listener)}
    for name, value in change.items():
        env.pop(name + "_FILE", None)
        env[name] = str(secure_kafka.tls / value) if value.endswith(".pem") else value
    env.update(
        {
            "BRIDGE_CLOUDFLARE__ACCOUNT_ID": "acct",
            "BRIDGE_CLOUDFLARE__API_TOKEN": "emulator-token",
            "BRIDGE_CLOUDFLARE__BASE_URL": "http://127.0.0.1:9/client/v4",
            "BRIDGE_HEALTH_PORT": "0",
            "BRIDGE_LOG_FORMAT": "json",
        }
    )
    process = await asyncio.create_subprocess_exec(
        sys.executable,
        "-m",
        "bridge",
        "run",
        env=env,
        stdout=asyncio.subprocess.PIPE,
        stderr=asyncio.subprocess.STDOUT,
    )
    output, _ = await asyncio.wait_for(process.communicate(), 120)
    text = output.decode()
    assert process.returncode == 1, text
    assert "Traceback" not in text
    failures = [
        json.loads(line)
        for line in text.splitlines()
        if line.startswith("{") and '"bridge_failed"' in line
    ]
    assert len(failures) == 1, text
    assert failures[0]["error_type"] == "KafkaRefused"
    assert expected in failures[0]["error"]
    assert secure_kafka.secret("scram.password") not in text
