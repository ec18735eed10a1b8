"""Store-and-forward MQTT publisher: outbox first, then QoS 1, delete on PUBACK.

Rationale (threads, ordering, redelivery):

* Two threads. paho's network loop (`loop_start`) runs the callbacks; our pump thread does
  everything else (reading the outbox, publishing, deleting acknowledged rows, stats).
  Callbacks only flip flags and append to lists under `self._cond`; the pump never holds
  `self._cond` while calling paho. paho calls `on_publish` while holding its own
  `_out_message_mutex`, which `publish()` also takes, so holding one of our locks across
  `publish()` and taking it in `on_publish` would deadlock.
* A PUBACK carries only the mid. The callback records the mid; the pump (the thread that
  called `publish()` and stored mid -> seq) resolves it. So an ack that arrives before
  `publish()` has even returned is not lost.
* Ordering: rows are handed to paho in seq order, at most `inflight_window` unacknowledged at
  a time, and only while connected. paho keeps those messages in memory and, on every
  reconnect, re-sends all of them (DUP set) in the order they were published *before* it
  sends anything new, and we only hand over rows after them. Clean session is used: the
  broker keeps no state for us, so a broker that restarts and forgets its in-flight state
  loses nothing: everything unacknowledged is still in paho's queue and in the outbox.
* After a process restart paho's queue is empty and the pump starts again at the oldest
  row of the outbox. Either way consumers may see a result twice (QoS 1 is at least
  once) and must de-duplicate by `id`; they never see a gap or a reordering.
* "Connected" (ready for new rows) is set only when the broker acknowledges the retained
  `online` status published from on_connect, never by connect()/connect_async() returning nor
  by the CONNACK itself. paho calls on_connect *before* it re-sends its unacknowledged
  messages, with its in-flight count reset to zero, so a pump woken by on_connect could put a
  new row on the wire ahead of an older re-sent one (seen in CI: seq 4 delivered after 15).
  The network thread reads that PUBACK only after the CONNACK handler has written every
  re-send, so from then on anything new is queued behind them.
"""

from __future__ import annotations

import json
import logging
import os
import ssl
import threading
import time
from collections import deque
from collections.abc import Callable
from dataclasses import asdict, dataclass
from datetime import datetime, timezone
from pathlib import Path
from typing import Any

import paho.mqtt.client as mqtt
from paho.mqtt.enums import CallbackAPIVersion, MQTTErrorCode

from edge.config import BrokerUrl, EdgeConfig
from edge.errors import BrokerError, ConfigError, OutboxError, OutboxFullError
from edge.history import History, HistoryLimits, history_path_for
from edge.outbox import Outbox, OutboxLimits
from edge.result import Latency, Result

log = logging.getLogger("edge.publisher")

STATS_SCHEMA_ID = "raman-edge/stats/1"
ONLINE = b"online"
OFFLINE = b"offline"


@dataclass(frozen=True)
class Topics:
    prefix: str
    device_id: str

    @property
    def result(self) -> str:
        return f"{self.prefix}/{self.device_id}/result"

    @property
    def status(self) -> str:
        return f"{self.prefix}/{self.device_id}/status"

    @property
    def stats(self) -> str:
        return f"{self.prefix}/{self.device_id}/stats"

    @property
    def spectrum(self) -> str:
        return f"{self.prefix}/{self.device_id}/spectrum"

    @property
    def request_prefix(self) -> str:
        return f"{self.prefix}/{self.device_id}/request/"

    def response(self, command: str) -> str:
        return f"{self.prefix}/{self.device_id}/response/{command}"


@dataclass(frozen=True, kw_only=True)
class MqttSettings:
    broker: BrokerUrl
    device_id: str
    prefix: str = "raman"
    client_id: str | None = None  # None: "raman-edge-<device_id>"
    tls_ca: Path | None = None
    tls_cert: Path | None = None
    tls_key: Path | None = None
    username: str | None = None
    password_file: Path | None = None
    password_env: str | None = None
    keepalive_s: int = 30
    reconnect_min_s: int = 1
    reconnect_max_s: int = 30
    inflight_window: int = 32
    stats_interval_s: float = 30.0
    # Home Assistant discovery: True publishes the retained configs on every connect, False
    # clears them (so disabling it removes the entities), None leaves the topics alone.
    ha_discovery: bool | None = None
    ha_prefix: str = "homeassistant"

    @classmethod
    def from_config(cls, config: EdgeConfig) -> MqttSettings:
        return cls(
            broker=config.broker_url,
            device_id=config.device_id,
            prefix=config.prefix,
            tls_ca=config.tls_ca,
            tls_cert=config.tls_cert,
            tls_key=config.tls_key,
            username=config.username,
            password_file=config.password_file,
            password_env=config.password_env,
            stats_interval_s=config.stats_interval_s,
            ha_discovery=config.ha_discovery,
            ha_prefix=config.ha_prefix,
        )

    @property
    def topics(self) -> Topics:
        return Topics(self.prefix, self.device_id)


def read_password(settings: MqttSettings) -> str | None:
    """The broker password from its file or environment variable (never logged)."""
    if settings.password_file is not None:
        try:
            return settings.password_file.read_text().rstrip("\r\n")
        except OSError as err:
            raise ConfigError(f"cannot read password_file {settings.password_file}: {err.strerror}") from None
    if settings.password_env is not None:
        value = os.environ.get(settings.password_env)
        if value is None:
            raise ConfigError(f"password_env: variable {settings.password_env} is not set")
        return value
    return None


def make_client(
    settings: MqttSettings, *, client_id: str, clean_session: bool = True, protocol: int = mqtt.MQTTv311
) -> mqtt.Client:
    """A paho 2.x client with the TLS, auth and backoff of `settings` (not connected).

    MQTT 5 (the request server, for response topic + correlation data) has no clean_session
    flag: clean_start is given to connect() instead.
    """
    if protocol == mqtt.MQTTv5:
        client = mqtt.Client(
            callback_api_version=CallbackAPIVersion.VERSION2, client_id=client_id, protocol=mqtt.MQTTv5
        )
    else:
        client = mqtt.Client(
            callback_api_version=CallbackAPIVersion.VERSION2,
            client_id=client_id,
            clean_session=clean_session,
            protocol=mqtt.MQTTv311,
        )
    if settings.broker.tls or settings.tls_ca is not None:
        for name in ("tls_ca", "tls_cert", "tls_key"):
            path = getattr(settings, name)
            if path is not None and not Path(path).is_file():
                raise BrokerError(f"{name} file {path} does not exist")
        try:
            client.tls_set(
                ca_certs=str(settings.tls_ca) if settings.tls_ca else None,
                certfile=str(settings.tls_cert) if settings.tls_cert else None,
                keyfile=str(settings.tls_key) if settings.tls_key else None,
                cert_reqs=ssl.CERT_REQUIRED,
            )
        except (ssl.SSLError, OSError, ValueError) as err:
            raise BrokerError(f"TLS setup failed: {err}") from None
    if settings.username is not None:
        client.username_pw_set(settings.username, read_password(settings))
    client.reconnect_delay_set(settings.reconnect_min_s, settings.reconnect_max_s)
    return client


@dataclass(frozen=True)
class PublisherStats:
    uptime_s: float
    connected: bool
    connect_failures: int  # failed connection attempts (refused or unreachable) so far
    results_total: int  # results committed by this process
    rejected_total: int  # of which status == "rejected"
    acked_total: int  # PUBACKs received for results by this process
    spectra_per_s: float  # results committed per second over the last stats interval
    queue_depth: int  # rows in the outbox (not yet acknowledged)
    queue_bytes: int
    dropped_total: int  # persisted: results ever dropped by the outbox bounds
    outbox_full_total: int  # commits refused because the disk was full (this process)
    latency_p50_ms: float | None  # of latency_ms.total up to the commit, recent results
    latency_p99_ms: float | None
    model: dict[str, str] | None

    def to_payload(self, device_id: str) -> dict[str, Any]:
        d = asdict(self)
        return {
            "schema": STATS_SCHEMA_ID,
            "device_id": device_id,
            "at": _now_iso(),
            **{k: d[k] for k in d if not k.startswith("latency_")},
            "latency_ms": {"p50": self.latency_p50_ms, "p99": self.latency_p99_ms},
        }


class Publisher:
    """Commit results to the outbox and forward them to the broker when it is reachable.

    Use as a context manager, or call start() and close(). enqueue() never touches the
    network and works whether or not the broker is reachable.
    """

    def __init__(
        self,
        settings: MqttSettings,
        outbox: Outbox,
        *,
        owns_outbox: bool = False,
        clock: Callable[[], float] = time.monotonic,
        history: History | None = None,
    ) -> None:
        self.settings = settings
        self.topics = settings.topics
        self._outbox = outbox
        # Acknowledged results go here (exact published bytes) for `replay`; None = no history.
        self.history = history
        self._owns_outbox = owns_outbox
        self._clock = clock
        self._client = make_client(settings, client_id=settings.client_id or f"raman-edge-{settings.device_id}")
        self._client.will_set(self.topics.status, OFFLINE, qos=1, retain=True)
        # Our window bounds what we hand to paho; the +4 leaves room for status messages.
        # (+8: status and Home Assistant discovery messages on connect.)
        self._client.max_inflight_messages_set(settings.inflight_window + 8)
        self._client.on_connect = self._on_connect
        self._client.on_connect_fail = self._on_connect_fail
        self._client.on_disconnect = self._on_disconnect
        self._client.on_publish = self._on_publish

        self._cond = threading.Condition()
        # --- guarded by _cond -----------------------------------------------------------
        self._connected = False
        self._session_mid: int | None = None  # mid of this connection's `online` status
        self._offline_logged = False
        self._dirty = True  # the pump should look at the outbox again
        self._acked_mids: list[int] = []
        self._closing = False
        self._pending = outbox.pending()
        # --- pump thread only -----------------------------------------------------------
        self._inflight: dict[int, tuple[int, str, bytes]] = {}  # mid -> (seq, id, published bytes)
        self._sent_through = 0  # highest seq handed to paho by this process
        self._ack_backlog: list[int] = []  # acknowledged seqs not yet deleted from the outbox
        self._ack_failing = False  # the last delete of acknowledged rows failed (disk full)
        # --- statistics (under _stats_lock) ----------------------------------------------
        self._stats_lock = threading.Lock()
        self._started = clock()
        self._results_total = 0
        self._rejected_total = 0
        self._acked_total = 0
        self._outbox_full_total = 0
        self._connect_failures = 0
        self._latencies_ms: deque[float] = deque(maxlen=1000)
        self._rate_mark = (self._started, 0)
        self._model: dict[str, str] | None = None

        self._pump = threading.Thread(target=self._run, name="raman-edge-publisher", daemon=True)
        self._started_threads = False

    @classmethod
    def from_config(cls, config: EdgeConfig) -> Publisher:
        outbox = Outbox(
            config.outbox_path,
            device_id=config.device_id,
            limits=OutboxLimits(
                max_rows=config.outbox_max_rows,
                max_bytes=config.outbox_max_bytes,
                max_age_s=config.outbox_max_age_s,
            ),
            group_commit_ms=config.outbox_group_commit_ms,
        )
        history = None
        try:
            history = History(
                history_path_for(config.outbox_path),
                limits=HistoryLimits(max_rows=config.history_max_rows, max_age_s=config.history_max_age_s),
            )
            return cls(MqttSettings.from_config(config), outbox, owns_outbox=True, history=history)
        except BaseException:
            outbox.close()
            if history is not None:
                history.close()
            raise

    # -- public API ---------------------------------------------------------------------------

    def start(self) -> Publisher:
        if self._started_threads:
            return self
        self._started_threads = True
        b = self.settings.broker
        log.info(
            "publisher starting",
            extra={
                "broker": str(b),
                "client_id": self._client._client_id.decode(),
                "topic": self.topics.result,
                "outbox": str(self._outbox.path),
                "pending": self._pending,
            },
        )
        self._client.connect_async(b.host, b.port, keepalive=self.settings.keepalive_s)
        self._client.loop_start()
        self._pump.start()
        return self

    def enqueue(self, result: Result) -> Result:
        """Commit `result` to the outbox (durable once its group commit syncs, docs/mqtt.md,
        "Group commit") and return it stamped with seq and id.

        Raises OutboxFullError when the disk is full: the result is then NOT stored; it has
        been logged (level error, field `result`) and the caller decides whether to go on.
        Never blocks on the network.
        """
        try:
            committed = self._outbox.commit(result)
        except OutboxFullError as err:
            with self._stats_lock:
                self._outbox_full_total += 1
            # The result exists nowhere else: put it in the log so it is not lost silently.
            log.error("result not stored, outbox full", extra={"error": str(err), "result": result.to_json()})
            raise
        with self._stats_lock:
            self._results_total += 1
            self._rejected_total += result.status == "rejected"
            total = result.latency_ms.with_sent(commit_ms=committed.commit_ms, publish_ms=0).total
            if total is not None:
                self._latencies_ms.append(total)
            self._model = {"name": result.model.name, "sha256": result.model.sha256}
        if committed.dropped:
            log.warning(
                "outbox full: dropped oldest results",
                extra={"dropped": committed.dropped, "limits": asdict(self._outbox.limits)},
            )
        with self._cond:
            self._pending = self._outbox.pending()
            self._dirty = True
            self._cond.notify_all()
        return committed.result

    def pending(self) -> int:
        """Results committed but not yet acknowledged by the broker."""
        return self._outbox.pending()

    @property
    def connected(self) -> bool:
        with self._cond:
            return self._connected

    def wait_connected(self, timeout_s: float) -> bool:
        with self._cond:
            return self._cond.wait_for(lambda: self._connected, timeout_s)

    def wait_drained(self, timeout_s: float) -> bool:
        """Block until every committed result is acknowledged; False on timeout."""
        with self._cond:
            return self._cond.wait_for(lambda: self._pending == 0, timeout_s)

    def stats(self) -> PublisherStats:
        ob = self._outbox.stats()
        now = self._clock()
        with self._stats_lock:
            mark_t, mark_n = self._rate_mark
            rate = (self._results_total - mark_n) / (now - mark_t) if now > mark_t else 0.0
            lat = sorted(self._latencies_ms)
            return PublisherStats(
                uptime_s=round(now - self._started, 3),
                connected=self.connected,
                connect_failures=self._connect_failures,
                results_total=self._results_total,
                rejected_total=self._rejected_total,
                acked_total=self._acked_total,
                spectra_per_s=round(rate, 3),
                queue_depth=ob.pending,
                queue_bytes=ob.pending_bytes,
                dropped_total=ob.dropped_total,
                outbox_full_total=self._outbox_full_total,
                latency_p50_ms=_percentile(lat, 50),
                latency_p99_ms=_percentile(lat, 99),
                model=self._model,
            )

    def close(self, drain_timeout_s: float = 0.0) -> bool:
        """Stop: optionally wait for the drain, publish retained "offline", disconnect.

        Returns whether the outbox was empty at the end. Unsent results stay in the outbox
        for the next run.
        """
        drained = self.wait_drained(drain_timeout_s) if drain_timeout_s > 0 else self._pending == 0
        with self._cond:
            if self._closing:
                return drained
            self._closing = True
            connected = self._connected
            self._cond.notify_all()
        if self._started_threads:
            self._pump.join(timeout=10)
            if connected:
                info = self._client.publish(self.topics.status, OFFLINE, qos=1, retain=True)
                info.wait_for_publish(timeout=2.0)
            self._client.disconnect()
            self._client.loop_stop()
        if self._owns_outbox:
            self._outbox.close()
            if self.history is not None:
                self.history.close()
        log.info("publisher stopped", extra={"pending": self._pending, "drained": drained})
        return drained

    def __enter__(self) -> Publisher:
        return self.start()

    def __exit__(self, *exc: object) -> None:
        self.close()

    # -- paho callbacks (network thread) -----------------------------------------------------

    def _on_connect(self, client: mqtt.Client, _u: Any, _flags: Any, reason: Any, _props: Any) -> None:
        if reason.is_failure:
            # Refused (bad credentials, not authorised...): paho retries with backoff.
            with self._stats_lock:
                self._connect_failures += 1
            self._log_offline_once(f"broker refused the connection: {reason}")
            return
        # Not "connected" yet: see the module docstring (ordering of paho's re-sends).
        info = client.publish(self.topics.status, ONLINE, qos=1, retain=True)
        with self._cond:
            self._session_mid = info.mid
        for topic, payload in self._ha_messages():
            client.publish(topic, payload, qos=1, retain=True)

    def _ha_messages(self) -> list[tuple[str, bytes]]:
        from edge.ha_discovery import discovery_messages, removal_messages

        s = self.settings
        if s.ha_discovery is None:
            return []
        if not s.ha_discovery:
            return removal_messages(ha_prefix=s.ha_prefix, device_id=s.device_id)
        with self._stats_lock:
            model = self._model["name"] if self._model else None
        return discovery_messages(
            ha_prefix=s.ha_prefix,
            device_id=s.device_id,
            result_topic=self.topics.result,
            stats_topic=self.topics.stats,
            status_topic=self.topics.status,
            model=model,
        )

    def _on_session_ready(self) -> None:
        with self._cond:
            self._session_mid = None
            self._connected = True
            self._offline_logged = False
            self._dirty = True
            pending = self._pending
            self._cond.notify_all()
        log.info("broker connected", extra={"broker": str(self.settings.broker), "pending": pending})

    def _on_connect_fail(self, _client: mqtt.Client, _u: Any) -> None:
        with self._stats_lock:
            self._connect_failures += 1
        self._log_offline_once("broker unreachable")

    def _on_disconnect(self, _client: mqtt.Client, _u: Any, _flags: Any, reason: Any, _props: Any) -> None:
        with self._cond:
            was_connected = self._connected
            self._connected = False
            self._session_mid = None
            self._cond.notify_all()
        if was_connected and not self._closing:
            self._log_offline_once(f"broker connection lost: {reason}")

    def _on_publish(self, _client: mqtt.Client, _u: Any, mid: int, _rc: Any, _props: Any) -> None:
        with self._cond:
            session_ready = mid == self._session_mid
            if not session_ready:
                self._acked_mids.append(mid)
                self._cond.notify_all()
        if session_ready:
            self._on_session_ready()

    def _log_offline_once(self, why: str) -> None:
        with self._cond:
            if self._offline_logged or self._closing:
                return
            self._offline_logged = True
            pending = self._pending
        log.warning(
            f"{why}; results are queued in the outbox and sent when it is back",
            extra={"broker": str(self.settings.broker), "pending": pending},
        )

    # -- pump thread --------------------------------------------------------------------------

    def _run(self) -> None:
        interval = self.settings.stats_interval_s
        next_stats = self._clock() + min(interval, 5.0)
        next_prune = self._clock() + 60.0
        while True:
            with self._cond:
                self._cond.wait_for(
                    lambda: (
                        self._closing
                        or bool(self._acked_mids)
                        or (self._connected and self._dirty and len(self._inflight) < self.settings.inflight_window)
                    ),
                    timeout=max(0.0, min(next_stats, next_prune) - self._clock()),
                )
                mids, self._acked_mids = self._acked_mids, []
                connected = self._connected
                closing = self._closing
                if connected:
                    self._dirty = False
            try:
                self._resolve_acks(mids)
                if connected and not closing:
                    self._fill_window()
                now = self._clock()
                if now >= next_prune:
                    next_prune = now + 60.0
                    self._prune()
                if now >= next_stats:
                    next_stats = now + interval
                    if connected and not closing:
                        self._publish_stats()
            except OutboxError as err:
                # The disk may recover (space freed); keep the thread alive and retry later.
                log.error("outbox error in publisher", exc_info=err)
                with self._cond:
                    self._cond.wait(timeout=1.0)
            except Exception:
                log.exception("unexpected error in publisher thread")
                with self._cond:
                    self._cond.wait(timeout=1.0)
            if closing:
                return

    def _resolve_acks(self, mids: list[int]) -> None:
        acked_rows = [self._inflight.pop(m) for m in mids if m in self._inflight]
        acked = [seq for seq, _id, _p in acked_rows]
        if acked:
            with self._stats_lock:
                self._acked_total += len(acked)
            self._ack_backlog.extend(acked)
            if self.history is not None:
                try:
                    self.history.add(acked_rows)
                except OutboxError as err:
                    # Replay coverage only: the results themselves were delivered.
                    log.error("cannot record acknowledged results in the history", extra={"error": str(err)})
        if not self._ack_backlog:
            return
        try:
            self._outbox.ack(self._ack_backlog)
        except OutboxError as err:
            # A full disk refuses even a DELETE (SQLite journals it first). The acknowledged
            # rows stay, are retried on every pass, and are skipped by _fill_window (it reads
            # past _sent_through), so the rest of the backlog keeps draining meanwhile. A
            # restart before the retry succeeds re-sends them: consumers de-duplicate by id.
            if not self._ack_failing:
                self._ack_failing = True
                log.error(
                    "cannot delete acknowledged results from the outbox; will retry",
                    extra={"error": str(err), "acknowledged": len(self._ack_backlog)},
                )
            return
        if self._ack_failing:
            self._ack_failing = False
            log.info("outbox deletes work again", extra={"deleted": len(self._ack_backlog)})
        self._ack_backlog = []
        pending = self._outbox.pending()
        with self._cond:
            self._pending = pending
            self._dirty = True
            self._cond.notify_all()

    def _fill_window(self) -> None:
        room = self.settings.inflight_window - len(self._inflight)
        if room <= 0:
            return
        rows = self._outbox.peek(after_seq=self._sent_through, limit=room)
        now_wall = time.time()
        for row in rows:
            payload = _finalise_payload(row.payload, row.commit_ms, now_wall - row.committed_at)
            info = self._client.publish(self.topics.result, payload, qos=1, retain=False)
            if info.rc not in (MQTTErrorCode.MQTT_ERR_SUCCESS, MQTTErrorCode.MQTT_ERR_NO_CONN):
                # Not queued by paho (e.g. its queue is full): try this row again later.
                log.warning("publish not queued", extra={"seq": row.seq, "rc": int(info.rc)})
                with self._cond:
                    self._dirty = True
                return
            # NO_CONN still queued it in paho; it is (re)sent on the next connect.
            self._inflight[info.mid] = (row.seq, row.id, payload)
            self._sent_through = row.seq
        if len(rows) == room:
            with self._cond:
                self._dirty = True

    def _prune(self) -> None:
        if self.history is not None:
            self.history.prune()
        dropped = self._outbox.prune_expired()
        if dropped:
            log.warning("outbox: dropped results older than max_age_s", extra={"dropped": dropped})
            with self._cond:
                self._pending = self._outbox.pending()
                self._cond.notify_all()

    def publish_spectrum(self, payload: dict[str, Any]) -> bool:
        """Best-effort (QoS 0, not stored) copy of a preprocessed spectrum, for `publish_spectra`.

        Spectra are bulky and optional: they are never queued in the outbox, so an outage
        drops them by design while every *result* is still stored and forwarded.
        """
        if not self.connected:
            return False
        info = self._client.publish(self.topics.spectrum, json.dumps(payload, separators=(",", ":")), qos=0)
        return info.rc == 0

    def _publish_stats(self) -> None:
        payload = self.stats().to_payload(self.settings.device_id)
        self._client.publish(self.topics.stats, json.dumps(payload), qos=0, retain=False)
        with self._stats_lock:
            self._rate_mark = (self._clock(), self._results_total)


def _finalise_payload(stored: str, commit_ms: float | None, waited_s: float) -> bytes:
    """Fill latency_ms.commit/publish/total for this copy; everything else is sent verbatim."""
    obj = json.loads(stored)
    lat = Latency(**obj["latency_ms"]).with_sent(
        commit_ms=None if commit_ms is None else round(commit_ms, 3),
        publish_ms=round(max(0.0, waited_s) * 1000.0, 3),
    )
    obj["latency_ms"] = asdict(lat)
    return json.dumps(obj, separators=(",", ":")).encode()


def _percentile(sorted_values: list[float], q: float) -> float | None:
    if not sorted_values:
        return None
    k = min(len(sorted_values) - 1, max(0, round(q / 100 * (len(sorted_values) - 1))))
    return round(sorted_values[k], 3)


def _now_iso() -> str:
    return datetime.now(timezone.utc).isoformat(timespec="milliseconds").replace("+00:00", "Z")
