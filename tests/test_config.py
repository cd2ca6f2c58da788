"""Configuration: names exactly as documented, one clear message naming the bad variable."""

from __future__ import annotations

from pathlib import Path

import pytest

from bridge.cli import main
from bridge.cloudflare.bodies import DEFAULT_BASE_URL
from bridge.config import (
    CloudflareSettings,
    KafkaSettings,
    Settings,
    TopicSettings,
    environment_variables,
    load_settings,
)
from bridge.errors import ConfigError
from tests.support.hermetic import hostile_environment

REQUIRED = {
    "BRIDGE_KAFKA__BOOTSTRAP_SERVERS": "broker:9092",
    "BRIDGE_CLOUDFLARE__ACCOUNT_ID": "acct",
    "BRIDGE_CLOUDFLARE__API_TOKEN": "sekret-token",
}


@pytest.fixture
def env(monkeypatch: pytest.MonkeyPatch) -> pytest.MonkeyPatch:
    for name in list(__import__("os").environ):
        if name.startswith("BRIDGE_"):
            monkeypatch.delenv(name)
    return monkeypatch


def test_defaults_from_the_issue(env: pytest.MonkeyPatch) -> None:
    for name, value in REQUIRED.items():
        env.setenv(name, value)
    settings = load_settings()
    assert settings.kafka.group_id == "workflows-bridge"
    assert settings.topics.commands == ["workflows.commands"]
    assert settings.topics.output == "workflows.instances"
    assert settings.topics.dlq == "workflows.commands.dlq"
    assert settings.cloudflare.base_url == "https://api.cloudflare.com/client/v4"
    assert settings.cloudflare.budget_requests <= 1200
    assert settings.cloudflare.budget_window_seconds == 300
    assert "sekret-token" not in repr(settings)


def test_every_missing_variable_is_named(env: pytest.MonkeyPatch) -> None:
    with pytest.raises(ConfigError) as caught:
        load_settings()
    for name in REQUIRED:
        assert name in str(caught.value)


def test_invalid_values_are_named(env: pytest.MonkeyPatch) -> None:
    for name, value in REQUIRED.items():
        env.setenv(name, value)
    env.setenv("BRIDGE_PIPELINE__MAX_CONCURRENCY", "zero")
    with pytest.raises(ConfigError, match="BRIDGE_PIPELINE__MAX_CONCURRENCY"):
        load_settings()
    env.setenv("BRIDGE_PIPELINE__MAX_CONCURRENCY", "4")
    env.setenv("BRIDGE_TOPICS__COMMANDS", " , ")
    with pytest.raises(ConfigError, match="BRIDGE_TOPICS__COMMANDS"):
        load_settings()


def test_a_rebalance_waits_longer_than_a_revocation_drains(env: pytest.MonkeyPatch) -> None:
    for name, value in REQUIRED.items():
        env.setenv(name, value)
    settings = load_settings()
    # aiokafka would wait only the session timeout (10 s) for a member busy draining (20 s)
    assert settings.kafka.rebalance_timeout_ms > settings.pipeline.drain_timeout_seconds * 1000
    env.setenv("BRIDGE_PIPELINE__DRAIN_TIMEOUT_SECONDS", "90")
    with pytest.raises(ConfigError, match="BRIDGE_KAFKA__REBALANCE_TIMEOUT_MS"):
        load_settings()
    env.setenv("BRIDGE_KAFKA__REBALANCE_TIMEOUT_MS", "120000")
    assert load_settings().kafka.rebalance_timeout_ms == 120_000


def test_toml_file_under_environment(env: pytest.MonkeyPatch, tmp_path: Path) -> None:
    path = tmp_path / "bridge.toml"
    path.write_text(
        '[kafka]\nbootstrap_servers = "from-file:9092"\ngroup_id = "file-group"\n'
        '[topics]\ncommands = ["a", "b"]\n'
        '[cloudflare]\naccount_id = "file-acct"\napi_token = "file-token"\n'
    )
    env.setenv("BRIDGE_KAFKA__GROUP_ID", "env-group")
    settings = load_settings(path)
    assert settings.kafka.bootstrap_servers == "from-file:9092"
    assert settings.kafka.group_id == "env-group"
    assert settings.topics.commands == ["a", "b"]
    broken = tmp_path / "broken.toml"
    broken.write_text("[kafka\n")
    with pytest.raises(ConfigError, match="not valid TOML"):
        load_settings(broken)
    with pytest.raises(ConfigError, match="cannot read"):
        load_settings(tmp_path / "absent.toml")


def test_run_without_config_exits_2_naming_the_variable(
    env: pytest.MonkeyPatch, capsys: pytest.CaptureFixture[str]
) -> None:
    assert main(["run"]) == 2
    assert "BRIDGE_KAFKA__BOOTSTRAP_SERVERS" in capsys.readouterr().err


def test_settings_built_in_code_read_no_environment(monkeypatch: pytest.MonkeyPatch) -> None:
    for name, value in hostile_environment().items():
        monkeypatch.setenv(name, value)
    settings = Settings(
        kafka=KafkaSettings(bootstrap_servers="mine:9092"),
        cloudflare=CloudflareSettings(account_id="acct", api_token="mine"),
    )
    assert settings.kafka.bootstrap_servers == "mine:9092"
    assert settings.kafka.group_id == "workflows-bridge"
    assert settings.topics == TopicSettings()
    assert settings.cloudflare.base_url == DEFAULT_BASE_URL
    assert settings.cloudflare.api_token.get_secret_value() == "mine"
    assert settings.health_port == 8080


def test_values_given_in_code_win_over_the_environment(env: pytest.MonkeyPatch) -> None:
    for name, value in REQUIRED.items():
        env.setenv(name, value)
    env.setenv("BRIDGE_KAFKA__GROUP_ID", "env-group")
    settings = load_settings(
        kafka={"bootstrap_servers": "code:9092"}, cloudflare={"base_url": "http://127.0.0.1:1"}
    )
    assert settings.kafka.bootstrap_servers == "code:9092"
    assert settings.kafka.group_id == "env-group"  # not given in code: the environment's
    assert settings.cloudflare.base_url == "http://127.0.0.1:1"
    assert settings.cloudflare.account_id == "acct"


def test_every_documented_variable_is_known() -> None:
    names = environment_variables()
    readme = (Path(__file__).resolve().parents[1] / "README.md").read_text()
    for name in names:
        assert f"`{name}`" in readme, f"{name} is not in the README"
    assert "BRIDGE_KAFKA__BOOTSTRAP_SERVERS" in names
    assert "BRIDGE_PIPELINE__DRAIN_TIMEOUT_SECONDS" in names


def test_secrets_come_from_files_named_by_file_variables(
    env: pytest.MonkeyPatch, tmp_path: Path
) -> None:
    for name, value in REQUIRED.items():
        env.setenv(name, value)
    env.delenv("BRIDGE_CLOUDFLARE__API_TOKEN")
    (tmp_path / "token").write_text("token-from-file\n")
    (tmp_path / "password").write_text("sasl-from-file")
    env.setenv("BRIDGE_CLOUDFLARE__API_TOKEN_FILE", str(tmp_path / "token"))
    env.setenv("BRIDGE_KAFKA__SECURITY_PROTOCOL", "sasl_ssl")
    env.setenv("BRIDGE_KAFKA__SASL_MECHANISM", "SCRAM-SHA-512")
    env.setenv("BRIDGE_KAFKA__SASL_USERNAME", "bridge")
    env.setenv("BRIDGE_KAFKA__SASL_PASSWORD_FILE", str(tmp_path / "password"))
    settings = load_settings()
    assert settings.cloudflare.api_token.get_secret_value() == "token-from-file"
    assert settings.kafka.sasl_password is not None
    assert settings.kafka.sasl_password.get_secret_value() == "sasl-from-file"
    assert settings.kafka.security_protocol == "SASL_SSL"
    env.setenv("BRIDGE_CLOUDFLARE__API_TOKEN", "also-set")
    with pytest.raises(ConfigError, match="BRIDGE_CLOUDFLARE__API_TOKEN or"):
        load_settings()
    env.delenv("BRIDGE_CLOUDFLARE__API_TOKEN")
    env.setenv("BRIDGE_KAFKA__SASL_PASSWORD_FILE", str(tmp_path / "absent"))
    with pytest.raises(ConfigError, match="BRIDGE_KAFKA__SASL_PASSWORD_FILE: cannot read"):
        load_settings()


def test_secrets_directory_holds_one_file_per_variable(
    env: pytest.MonkeyPatch, tmp_path: Path
) -> None:
    env.setenv("BRIDGE_KAFKA__BOOTSTRAP_SERVERS", "broker:9092")
    env.setenv("BRIDGE_CLOUDFLARE__ACCOUNT_ID", "acct")
    secrets = tmp_path / "secrets"
    secrets.mkdir()
    (secrets / "BRIDGE_CLOUDFLARE__API_TOKEN").write_text("token-from-dir\n")
    (secrets / "bridge_kafka__sasl_password").write_text("pw-from-dir")
    env.setenv("BRIDGE_SECRETS_DIR", str(secrets))
    settings = load_settings()
    assert settings.cloudflare.api_token.get_secret_value() == "token-from-dir"
    assert settings.kafka.sasl_password is not None
    assert settings.kafka.sasl_password.get_secret_value() == "pw-from-dir"
    env.setenv("BRIDGE_CLOUDFLARE__API_TOKEN", "env-wins")
    assert load_settings().cloudflare.api_token.get_secret_value() == "env-wins"
    env.setenv("BRIDGE_SECRETS_DIR", str(tmp_path / "nowhere"))
    with pytest.raises(ConfigError, match="BRIDGE_SECRETS_DIR"):
        load_settings()


@pytest.mark.parametrize(
    ("typo", "suggestion"),
    [
        ("BRIDGE_LOGLEVEL", "BRIDGE_LOG_LEVEL"),
        ("BRIDGE_KAFKA__BOOTSTRAP_SERVER", "BRIDGE_KAFKA__BOOTSTRAP_SERVERS"),
        ("BRIDGE_KAFKA__SASL_PASWORD_FILE", "BRIDGE_KAFKA__SASL_PASSWORD_FILE"),
    ],
)
def test_unknown_variable_stops_the_start_naming_the_closest(
    env: pytest.MonkeyPatch, capsys: pytest.CaptureFixture[str], typo: str, suggestion: str
) -> None:
    for name, value in REQUIRED.items():
        env.setenv(name, value)
    env.setenv(typo, "x")
    assert main(["run"]) == 2
    err = capsys.readouterr().err
    assert f"unknown variable {typo}; did you mean {suggestion}?" in err


@pytest.mark.parametrize(
    ("variables", "message"),
    [
        ({"BRIDGE_KAFKA__SECURITY_PROTOCOL": "SASL_SSLL"}, "BRIDGE_KAFKA__SECURITY_PROTOCOL"),
        (
            {
                "BRIDGE_KAFKA__SECURITY_PROTOCOL": "SASL_SSL",
                "BRIDGE_KAFKA__SASL_MECHANISM": "SCRAM",
            },
            "BRIDGE_KAFKA__SASL_MECHANISM",
        ),
        ({"BRIDGE_KAFKA__SECURITY_PROTOCOL": "SASL_SSL"}, "needs BRIDGE_KAFKA__SASL_MECHANISM"),
        ({"BRIDGE_KAFKA__SASL_MECHANISM": "PLAIN"}, "SASL_SSL or SASL_PLAINTEXT, not PLAINTEXT"),
        (
            {
                "BRIDGE_KAFKA__SECURITY_PROTOCOL": "SASL_SSL",
                "BRIDGE_KAFKA__SASL_MECHANISM": "PLAIN",
            },
            "needs BRIDGE_KAFKA__SASL_USERNAME",
        ),
        (
            {
                "BRIDGE_KAFKA__SECURITY_PROTOCOL": "SASL_PLAINTEXT",
                "BRIDGE_KAFKA__SASL_MECHANISM": "OAUTHBEARER",
            },
            "BRIDGE_KAFKA__SASL_OAUTH_TOKEN_FILE",
        ),
        (
            {
                "BRIDGE_KAFKA__SECURITY_PROTOCOL": "SASL_SSL",
                "BRIDGE_KAFKA__SASL_MECHANISM": "AWS_MSK_IAM",
            },
            "BRIDGE_KAFKA__AWS_REGION",
        ),
        ({"BRIDGE_KAFKA__SSL_CAFILE": "/ca.pem"}, "does not use TLS"),
    ],
)
def test_security_settings_are_validated_with_exit_2(
    env: pytest.MonkeyPatch,
    capsys: pytest.CaptureFixture[str],
    variables: dict[str, str],
    message: str,
) -> None:
    for name, value in {**REQUIRED, **variables}.items():
        env.setenv(name, value)
    assert main(["run"]) == 2
    assert message in capsys.readouterr().err


def test_workflow_allow_list_is_comma_separated(env: pytest.MonkeyPatch) -> None:
    for name, value in REQUIRED.items():
        env.setenv(name, value)
    assert load_settings().cloudflare.workflows == []
    env.setenv("BRIDGE_CLOUDFLARE__WORKFLOWS", "orders, billing")
    assert load_settings().cloudflare.workflows == ["orders", "billing"]


def test_every_secret_variable_has_a_file_variant() -> None:
    names = environment_variables()
    for secret in ("BRIDGE_CLOUDFLARE__API_TOKEN", "BRIDGE_KAFKA__SASL_PASSWORD"):
        assert secret + "_FILE" in names
    assert "BRIDGE_KAFKA__SSL_KEY_PASSWORD_FILE" in names
    assert "BRIDGE_SECRETS_DIR" in names


@pytest.mark.parametrize(
    "url",
    [
        "https://api.cloudflare.com/client/v4",
        "http://127.0.0.1:8788/client/v4",
        "http://127.9.9.9/client/v4",
        "http://[::1]:8788/client/v4",
        "http://localhost:8788/client/v4",
    ],
)
def test_https_and_loopback_http_base_urls_are_accepted(url: str) -> None:
    settings = CloudflareSettings(account_id="a", api_token="t", base_url=url)
    assert settings.base_url == url


def test_plain_http_elsewhere_is_refused_unless_allowed(env: pytest.MonkeyPatch) -> None:
    for name, value in REQUIRED.items():
        env.setenv(name, value)
    env.setenv("BRIDGE_CLOUDFLARE__BASE_URL", "http://api.example.com/client/v4")
    with pytest.raises(ConfigError) as caught:
        load_settings()
    message = str(caught.value)
    assert "BRIDGE_CLOUDFLARE__BASE_URL" in message
    assert "BRIDGE_CLOUDFLARE__ALLOW_INSECURE_HTTP=true" in message
    env.setenv("BRIDGE_CLOUDFLARE__BASE_URL", "ftp://api.example.com/")
    with pytest.raises(ConfigError, match="BRIDGE_CLOUDFLARE__BASE_URL"):
        load_settings()
    env.setenv("BRIDGE_CLOUDFLARE__BASE_URL", "http://api.example.com/client/v4")
    env.setenv("BRIDGE_CLOUDFLARE__ALLOW_INSECURE_HTTP", "true")
    assert load_settings().cloudflare.base_url == "http://api.example.com/client/v4"


def test_run_with_an_insecure_base_url_exits_2(
    env: pytest.MonkeyPatch, capsys: pytest.CaptureFixture[str]
) -> None:
    for name, value in REQUIRED.items():
        env.setenv(name, value)
    env.setenv("BRIDGE_CLOUDFLARE__BASE_URL", "http://10.0.0.7/client/v4")
    assert main(["run"]) == 2
    err = capsys.readouterr().err
    assert "BRIDGE_CLOUDFLARE__BASE_URL" in err
    assert "unencrypted" in err
