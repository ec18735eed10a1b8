"""The one configuration object of the edge daemon, loaded once by the CLI and passed down.

Sources, later wins: TOML file -> environment (`RAMAN_EDGE_<KEY>`) -> CLI flags. Keys are flat
and identical in all three (`outbox_max_rows` in TOML, `RAMAN_EDGE_OUTBOX_MAX_ROWS`,
`--outbox-max-rows`), so an operator never has to translate between spellings. An unknown
key in the file or an unknown `RAMAN_EDGE_*` variable is an error naming it: a typo must not
silently fall back to a default. `RAMAN_EDGE_CONFIG` names the TOML file and is not a key.
"""

from __future__ import annotations

import os
import re
import socket
import sys
import types
from collections.abc import Mapping
from dataclasses import dataclass, field, fields, replace
from pathlib import Path
from typing import Any, Union, get_args, get_origin, get_type_hints
from urllib.parse import urlsplit

from edge.errors import ConfigError
from edge.quality import QualityLimits

if sys.version_info >= (3, 11):
    import tomllib
else:  # pragma: no cover - the device runs 3.11
    import tomli as tomllib

ENV_PREFIX = "RAMAN_EDGE_"
ENV_CONFIG_FILE = "RAMAN_EDGE_CONFIG"
LOG_LEVELS = ("debug", "info", "warning", "error")
LOG_FORMATS = ("kv", "json")
_TOPIC_LEVEL = re.compile(r"^[A-Za-z0-9_.\-]+$")


@dataclass(frozen=True)
class BrokerUrl:
    scheme: str  # "mqtt" or "mqtts"
    host: str
    port: int

    @property
    def tls(self) -> bool:
        return self.scheme == "mqtts"

    def __str__(self) -> str:
        return f"{self.scheme}://{self.host}:{self.port}"


def parse_broker_url(url: str) -> BrokerUrl:
    """Parse `mqtt://host[:port]` or `mqtts://host[:port]` (default ports 1883 / 8883)."""
    parts = urlsplit(url)
    if parts.scheme not in ("mqtt", "mqtts"):
        raise ConfigError(f"broker URL {url!r}: scheme must be mqtt:// or mqtts://")
    if parts.username or parts.password:
        raise ConfigError(
            f"broker URL {parts.scheme}://{parts.hostname}: put credentials in username/password_file, not in the URL"
        )
    if not parts.hostname:
        raise ConfigError(f"broker URL {url!r} has no host")
    try:
        port = parts.port
    except ValueError:
        raise ConfigError(f"broker URL {url!r} has an invalid port") from None
    if parts.path not in ("", "/"):
        raise ConfigError(f"broker URL {url!r}: a path is not allowed")
    default_port = 8883 if parts.scheme == "mqtts" else 1883
    return BrokerUrl(parts.scheme, parts.hostname, port or default_port)


def default_device_id() -> str:
    return re.sub(r"[^A-Za-z0-9_.\-]", "-", socket.gethostname()) or "raman-edge"


def default_outbox_path(env: Mapping[str, str] | None = None) -> Path:
    env = os.environ if env is None else env
    # systemd's StateDirectory= sets STATE_DIRECTORY; otherwise follow the XDG base dir spec.
    if env.get("STATE_DIRECTORY"):
        return Path(env["STATE_DIRECTORY"].split(":")[0]) / "outbox.sqlite"
    base = env.get("XDG_STATE_HOME") or str(Path.home() / ".local" / "state")
    return Path(base) / "raman-edge" / "outbox.sqlite"


@dataclass(frozen=True)
class EdgeConfig:
    # spectrometer / acquisition
    port: str | None = None  # serial device, e.g. /dev/serial/by-id/usb-...; None with simulate
    baud: int = 115200
    simulate: bool = False  # use the built-in spectrometer emulator instead of `port`
    rate_hz: float = 1.0  # spectra per second in simulate mode
    integration_ms: int = 1000
    averages: int = 1
    count: int | None = None  # stop after this many spectra; None = run forever
    model_dir: Path | None = None  # None = the bundle shipped with the package
    # What the device's shift axis reads too high (cm-1), measured by `edge calibrate` on a
    # reference; subtracted from every spectrum's Raman shift. 0 = trust the device.
    shift_offset_cm1: float = 0.0
    # auto-exposure (edge/exposure.py): per spectrum, a short probe, then the integration time
    # and averages that keep the brightest pixel below max_peak_fraction of full scale and
    # reach the target SNR, within max_acquisition_ms (probe included) and the device's limits
    auto_exposure: bool = False
    max_acquisition_ms: int = 5000
    auto_exposure_target_snr: float = 20.0
    auto_exposure_max_peak_fraction: float = 0.6
    # calibration health (docs/mqtt.md "Calibration health"): the reference the device can see
    # when asked (a reference slot or turret position; the daemon moves nothing), how often to
    # check it (0 = only on a `calibrate` request), the drift limit, and whether a measured
    # offset replaces shift_offset_cm1 (never without this set)
    calibration_reference: str | None = None
    calibration_check_interval_s: float = 0.0
    calibration_drift_limit_cm1: float = 2.0
    calibration_frames: int = 10
    calibration_apply: bool = False
    # references added on the device (edge library add / the `library/add` request); None =
    # <state directory>/library (beside the outbox). Re-read when it changes.
    library_dir: Path | None = None
    # bundles installed on the device for `model/activate` (one sub-directory per bundle);
    # None = <state directory>/models (beside the outbox)
    models_dir: Path | None = None
    # MQTT
    broker: str = "mqtt://127.0.0.1:1883"
    device_id: str = field(default_factory=default_device_id)
    prefix: str = "raman"
    stats_interval_s: float = 30.0
    publish_spectra: bool = False
    tls_ca: Path | None = None
    tls_cert: Path | None = None
    tls_key: Path | None = None
    username: str | None = None
    password_file: Path | None = None  # the password itself is never part of the config
    password_env: str | None = None  # name of the environment variable holding it
    # outbox
    outbox_path: Path = field(default_factory=default_outbox_path)
    outbox_max_rows: int = 100_000
    outbox_max_bytes: int = 256 * 1024 * 1024
    outbox_max_age_s: float = 7 * 24 * 3600.0
    # Longest a committed result waits for its group's fsync (0-5 ms; 0 = one fsync per
    # result). docs/mqtt.md "Durability" says what a group commit promises.
    outbox_group_commit_ms: float = 2.0
    drain_timeout_s: float = 30.0  # on shutdown, wait this long for the outbox to drain
    # history of acknowledged results, for `replay` (file beside the outbox)
    history_max_rows: int = 500_000  # ~6 days at 1 spectrum/s
    history_max_age_s: float = 7 * 24 * 3600.0
    # requests over MQTT (docs/mqtt.md): commands accepted, and a token bucket per device
    allow_requests: tuple[str, ...] = ("status", "replay")
    request_rate_per_s: float = 2.0
    request_burst: int = 10
    # Prometheus /metrics (0 = off); loopback unless told otherwise
    metrics_port: int = 0
    metrics_host: str = "127.0.0.1"
    # Home Assistant MQTT discovery
    ha_discovery: bool = False
    ha_prefix: str = "homeassistant"
    # quality gate (edge/quality.py explains each default)
    min_snr: float = QualityLimits.min_snr
    max_fluorescence_ratio: float = QualityLimits.max_fluorescence_ratio
    max_spikes: int = QualityLimits.max_spikes
    min_coverage: float = QualityLimits.min_coverage
    # logging
    log_level: str = "info"
    log_format: str = "kv"

    def __post_init__(self) -> None:
        _validate(self)

    @property
    def library_path(self) -> Path:
        return self.library_dir if self.library_dir is not None else Path(self.outbox_path).parent / "library"

    @property
    def models_path(self) -> Path:
        return self.models_dir if self.models_dir is not None else Path(self.outbox_path).parent / "models"

    @property
    def broker_url(self) -> BrokerUrl:
        return parse_broker_url(self.broker)

    @property
    def quality_limits(self) -> QualityLimits:
        return QualityLimits(
            min_snr=self.min_snr,
            max_fluorescence_ratio=self.max_fluorescence_ratio,
            max_spikes=self.max_spikes,
            min_coverage=self.min_coverage,
        )


def config_keys() -> tuple[str, ...]:
    return tuple(f.name for f in fields(EdgeConfig))


def load_config(
    path: Path | str | None = None,
    *,
    env: Mapping[str, str] | None = None,
    overrides: Mapping[str, Any] | None = None,
) -> EdgeConfig:
    """Build the EdgeConfig: defaults <- TOML `path` <- `env` <- `overrides` (CLI flags).

    `env` defaults to os.environ; `overrides` values of None are ignored (flag not given).
    `path` None falls back to $RAMAN_EDGE_CONFIG, then to no file.
    """
    env = dict(os.environ if env is None else env)
    hints = get_type_hints(EdgeConfig)
    values: dict[str, Any] = {
        "device_id": default_device_id(),
        "outbox_path": default_outbox_path(env),
    }

    file = path if path is not None else env.get(ENV_CONFIG_FILE) or None
    if file is not None:
        for key, raw in _read_toml(Path(file)).items():
            if key not in hints:
                raise ConfigError(f"{file}: unknown key {key!r} (known: {', '.join(hints)})")
            values[key] = _coerce(key, raw, hints[key], f"{file}: {key}", from_text=False)

    for name, raw in sorted(env.items()):
        if not name.startswith(ENV_PREFIX) or name == ENV_CONFIG_FILE:
            continue
        key = name[len(ENV_PREFIX) :].lower()
        if key not in hints:
            hint = "; name a variable outside RAMAN_EDGE_* in password_env" if "password" in key else ""
            raise ConfigError(f"unknown environment variable {name} (no config key {key!r}){hint}")
        values[key] = _coerce(key, raw, hints[key], f"environment {name}", from_text=True)

    for key, raw in (overrides or {}).items():
        if key not in hints:
            raise ConfigError(f"unknown option {key!r}")
        if raw is not None:
            flag = "--" + key.replace("_", "-")
            values[key] = _coerce(key, raw, hints[key], f"option {flag}", from_text=False)

    return EdgeConfig(**values)


def with_overrides(config: EdgeConfig, **changes: Any) -> EdgeConfig:
    return replace(config, **changes)


def _read_toml(path: Path) -> dict[str, Any]:
    try:
        with path.open("rb") as fh:
            data = tomllib.load(fh)
    except FileNotFoundError:
        raise ConfigError(f"config file {path} does not exist") from None
    except OSError as err:
        raise ConfigError(f"cannot read config file {path}: {err.strerror}") from None
    except tomllib.TOMLDecodeError as err:
        raise ConfigError(f"config file {path} is not valid TOML: {err}") from None
    for key, value in data.items():
        if isinstance(value, dict):
            raise ConfigError(f"{path}: unknown section [{key}] (keys are flat, no sections)")
    return data


_TRUE = {"1", "true", "yes", "on"}
_FALSE = {"0", "false", "no", "off"}


def _coerce(key: str, raw: Any, hint: Any, where: str, *, from_text: bool) -> Any:
    base, optional = _unwrap_optional(hint)
    if optional and (raw is None or (from_text and raw == "")):
        return None
    try:
        if base is bool:
            if isinstance(raw, bool):
                return raw
            if from_text and str(raw).strip().lower() in _TRUE | _FALSE:
                return str(raw).strip().lower() in _TRUE
        elif base is int:
            if isinstance(raw, int) and not isinstance(raw, bool):
                return raw
            if from_text:
                return int(str(raw).strip())
        elif base is float:
            if isinstance(raw, int | float) and not isinstance(raw, bool):
                return float(raw)
            if from_text:
                return float(str(raw).strip())
        elif base is str:
            if isinstance(raw, str):
                return raw
        elif base is Path and isinstance(raw, str | Path):
            return Path(raw).expanduser()
        elif get_origin(base) is tuple:
            # A TOML array of strings, or a comma-separated list from the environment / a flag.
            items = [x.strip() for x in raw.split(",")] if isinstance(raw, str) else raw
            if isinstance(items, list | tuple) and all(isinstance(x, str) for x in items):
                return tuple(x for x in items if x)
    except ValueError:
        pass
    raise ConfigError(f"{where}: expected {_type_name(base)}, got {raw!r}")


def _unwrap_optional(hint: Any) -> tuple[Any, bool]:
    if get_origin(hint) in (Union, types.UnionType):
        args = [a for a in get_args(hint) if a is not type(None)]
        return args[0], len(args) < len(get_args(hint))
    return hint, False


def _type_name(t: Any) -> str:
    if get_origin(t) is tuple:
        return "a list of strings"
    return {bool: "true/false", int: "an integer", float: "a number", str: "a string"}.get(t, "a path")


def _validate(c: EdgeConfig) -> None:
    parse_broker_url(c.broker)
    if not _TOPIC_LEVEL.match(c.device_id):
        raise ConfigError(f"device_id {c.device_id!r}: use letters, digits, '.', '_' or '-' (it is a topic level)")
    if not c.prefix or any(not _TOPIC_LEVEL.match(level) for level in c.prefix.split("/")):
        raise ConfigError(f"prefix {c.prefix!r}: topic levels of letters, digits, '.', '_', '-'")
    positive = {
        "baud": c.baud,
        "rate_hz": c.rate_hz,
        "integration_ms": c.integration_ms,
        "averages": c.averages,
        "stats_interval_s": c.stats_interval_s,
        "outbox_max_rows": c.outbox_max_rows,
        "outbox_max_bytes": c.outbox_max_bytes,
        "outbox_max_age_s": c.outbox_max_age_s,
        "history_max_rows": c.history_max_rows,
        "history_max_age_s": c.history_max_age_s,
        "request_rate_per_s": c.request_rate_per_s,
        "request_burst": c.request_burst,
        "max_acquisition_ms": c.max_acquisition_ms,
        "auto_exposure_target_snr": c.auto_exposure_target_snr,
        "calibration_drift_limit_cm1": c.calibration_drift_limit_cm1,
        "calibration_frames": c.calibration_frames,
    }
    for key, value in positive.items():
        if value <= 0:
            raise ConfigError(f"{key} must be > 0, got {value}")
    if not 0.05 <= c.auto_exposure_max_peak_fraction <= 0.95:
        raise ConfigError(
            f"auto_exposure_max_peak_fraction must be within 0.05..0.95, got {c.auto_exposure_max_peak_fraction}"
        )
    from edge.outbox import MAX_GROUP_COMMIT_MS  # late: the outbox module pulls sqlite3

    if not 0.0 <= c.outbox_group_commit_ms <= MAX_GROUP_COMMIT_MS:
        raise ConfigError(
            f"outbox_group_commit_ms must be within 0-{MAX_GROUP_COMMIT_MS:g} ms (0 = fsync every result), "
            f"got {c.outbox_group_commit_ms}"
        )
    if c.calibration_check_interval_s < 0:
        raise ConfigError(f"calibration_check_interval_s must be >= 0 (0 = off), got {c.calibration_check_interval_s}")
    from raman_core.bands import CALIBRATION_LINES_CM1 as REFERENCE_LINES_CM1  # late: pulls NumPy

    if c.calibration_reference is not None and c.calibration_reference not in REFERENCE_LINES_CM1:
        raise ConfigError(
            f"calibration_reference {c.calibration_reference!r}: one of {', '.join(sorted(REFERENCE_LINES_CM1))}"
        )
    if c.calibration_check_interval_s > 0 and c.calibration_reference is None:
        raise ConfigError("calibration_check_interval_s needs calibration_reference (the reference the device sees)")
    if c.count is not None and c.count < 1:
        raise ConfigError(f"count must be >= 1, got {c.count}")
    c.quality_limits  # noqa: B018 - validates the gate thresholds (raises ConfigError)
    if not abs(c.shift_offset_cm1) <= 100.0:
        raise ConfigError(
            f"shift_offset_cm1 must be within +/-100 cm-1, got {c.shift_offset_cm1} (recalibrate the device)"
        )
    from edge.requests import COMMANDS  # late: requests imports nothing from config, keep it so

    unknown = [r for r in c.allow_requests if r not in COMMANDS]
    if unknown:
        raise ConfigError(f"allow_requests: unknown command(s) {', '.join(unknown)} (known: {', '.join(COMMANDS)})")
    if not 0 <= c.metrics_port <= 65535:
        raise ConfigError(f"metrics_port must be 0 (off) or a TCP port, got {c.metrics_port}")
    if not c.ha_prefix or any(not _TOPIC_LEVEL.match(level) for level in c.ha_prefix.split("/")):
        raise ConfigError(f"ha_prefix {c.ha_prefix!r}: topic levels of letters, digits, '.', '_', '-'")
    if c.drain_timeout_s < 0:
        raise ConfigError(f"drain_timeout_s must be >= 0, got {c.drain_timeout_s}")
    if c.log_level.lower() not in LOG_LEVELS:
        raise ConfigError(f"log_level {c.log_level!r}: one of {', '.join(LOG_LEVELS)}")
    if c.log_format not in LOG_FORMATS:
        raise ConfigError(f"log_format {c.log_format!r}: one of {', '.join(LOG_FORMATS)}")
    if (c.tls_cert is None) != (c.tls_key is None):
        raise ConfigError("tls_cert and tls_key must be given together")
    if c.password_file is not None and c.password_env is not None:
        raise ConfigError("give password_file or password_env, not both")
    if (c.password_file is not None or c.password_env is not None) and c.username is None:
        raise ConfigError("a password needs a username")
