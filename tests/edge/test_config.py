"""Config: TOML -> environment -> flags precedence, unknown keys named, types checked."""

from __future__ import annotations

from pathlib import Path

import pytest

from edge.config import EdgeConfig, config_keys, default_outbox_path, load_config
from edge.errors import ConfigError

DEPLOY_TOML = Path(__file__).resolve().parents[2] / "deploy" / "edge.toml"


def _toml(tmp_path: Path, text: str) -> Path:
    p = tmp_path / "edge.toml"
    p.write_text(text)
    return p


def test_defaults_without_any_source() -> None:
    cfg = load_config(env={"XDG_STATE_HOME": "/state"})
    assert cfg.broker == "mqtt://127.0.0.1:1883" and cfg.prefix == "raman"
    assert cfg.outbox_path == Path("/state/raman-edge/outbox.sqlite")
    assert cfg.drain_timeout_s == 30.0 and cfg.model_dir is None and cfg.count is None
    assert cfg.device_id  # from the hostname


def test_systemd_state_directory_wins_for_the_outbox() -> None:
    env = {"STATE_DIRECTORY": "/var/lib/raman-edge", "XDG_STATE_HOME": "/x"}
    assert default_outbox_path(env) == Path("/var/lib/raman-edge/outbox.sqlite")


def test_precedence_file_then_env_then_flags(tmp_path: Path) -> None:
    path = _toml(
        tmp_path,
        'broker = "mqtt://file:1883"\nprefix = "file"\nrate_hz = 2\ndevice_id = "from-file"\n',
    )
    env = {"RAMAN_EDGE_PREFIX": "env", "RAMAN_EDGE_RATE_HZ": "5.5", "RAMAN_EDGE_SIMULATE": "yes"}
    cfg = load_config(path, env=env, overrides={"rate_hz": 9.0, "broker": None})
    assert cfg.broker == "mqtt://file:1883"  # only in the file (flag given as None = absent)
    assert cfg.prefix == "env"  # env beats file
    assert cfg.rate_hz == 9.0  # flag beats env
    assert cfg.simulate is True and cfg.device_id == "from-file"


def test_config_file_from_environment(tmp_path: Path) -> None:
    path = _toml(tmp_path, 'prefix = "lab"\n')
    assert load_config(env={"RAMAN_EDGE_CONFIG": str(path)}).prefix == "lab"


def test_unknown_toml_key_is_named(tmp_path: Path) -> None:
    path = _toml(tmp_path, 'brokr = "mqtt://x"\n')
    with pytest.raises(ConfigError, match="unknown key 'brokr'"):
        load_config(path, env={})


def test_sections_are_refused(tmp_path: Path) -> None:
    with pytest.raises(ConfigError, match=r"section \[mqtt\]"):
        load_config(_toml(tmp_path, '[mqtt]\nbroker = "mqtt://x"\n'), env={})


def test_unknown_env_var_is_named() -> None:
    with pytest.raises(ConfigError, match="RAMAN_EDGE_BROKR"):
        load_config(env={"RAMAN_EDGE_BROKR": "mqtt://x"})


@pytest.mark.parametrize(
    ("env", "match"),
    [
        ({"RAMAN_EDGE_BAUD": "fast"}, "RAMAN_EDGE_BAUD: expected an integer"),
        ({"RAMAN_EDGE_SIMULATE": "perhaps"}, "expected true/false"),
        ({"RAMAN_EDGE_BROKER": "http://x"}, "mqtt:// or mqtts://"),
        ({"RAMAN_EDGE_BROKER": "mqtt://u:pw@host"}, "credentials"),
        ({"RAMAN_EDGE_DEVICE_ID": "a/b"}, "device_id"),
        ({"RAMAN_EDGE_PREFIX": "raman/#"}, "prefix"),
        ({"RAMAN_EDGE_OUTBOX_MAX_ROWS": "0"}, "outbox_max_rows must be > 0"),
        ({"RAMAN_EDGE_LOG_LEVEL": "loud"}, "log_level"),
        ({"RAMAN_EDGE_TLS_CERT": "/c.pem"}, "together"),
        ({"RAMAN_EDGE_PASSWORD_ENV": "PW"}, "needs a username"),
    ],
)
def test_invalid_values_are_refused_with_the_key(env: dict[str, str], match: str) -> None:
    with pytest.raises(ConfigError, match=match):
        load_config(env=env)


def test_toml_types_are_checked(tmp_path: Path) -> None:
    with pytest.raises(ConfigError, match="baud: expected an integer"):
        load_config(_toml(tmp_path, 'baud = "115200"\n'), env={})


def test_optional_from_env_and_paths() -> None:
    env = {"RAMAN_EDGE_COUNT": "5", "RAMAN_EDGE_MODEL_DIR": "~/m", "RAMAN_EDGE_PORT": ""}
    cfg = load_config(env=env)
    assert cfg.count == 5 and cfg.model_dir == Path("~/m").expanduser() and cfg.port is None


def test_mqtts_default_port() -> None:
    assert load_config(env={"RAMAN_EDGE_BROKER": "mqtts://b.example"}).broker_url.port == 8883


def test_shipped_example_documents_every_key_and_parses_uncommented(tmp_path: Path) -> None:
    text = DEPLOY_TOML.read_text()
    documented = {
        line.lstrip("# ").split("=")[0].strip()
        for line in text.splitlines()
        if "=" in line and line.startswith("# ") and not line.startswith("#  ")
    }
    assert set(config_keys()) <= documented
    load_config(DEPLOY_TOML, env={})  # all commented out: valid and empty


def test_config_is_frozen() -> None:
    cfg = EdgeConfig()
    with pytest.raises(AttributeError):
        cfg.prefix = "x"  # type: ignore[misc]
