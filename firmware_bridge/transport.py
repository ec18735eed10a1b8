"""Thin threaded serial transport: pyserial bytes in, codec events out, link events too.

    t = Transport("/dev/ttyUSB0", baud=115200, codec=Codec())   # or "loop://", a pty path
    t.start()
    t.send(codec.encode(GetInfo()))
    event = t.get(timeout_s=1.0)     # Message | FrameError | LinkDown | LinkUp | None

A reader thread reads whatever is waiting, feeds the codec and queues its events. When the
port fails (unplug, pty closed) it queues `LinkDown` instead of dying, closes the port and
keeps trying to reopen the same path (a /dev/serial/by-id link or the emulator's --link
symlink reappears when the device comes back); on success it queues `LinkUp`. Device I/O
errors never escape from the thread; they become events.
"""

from __future__ import annotations

import contextlib
import queue
import threading
import time
from typing import Any

import serial

from firmware_bridge.codec import Codec, Event
from firmware_bridge.errors import DeviceError
from firmware_bridge.link import LinkDown, LinkUp
from firmware_bridge.messages import SpectrumFrame

#: Events waiting to be read. Beyond this the oldest are dropped (counted), so a caller that
#: stops reading cannot make the process grow; a spectrum is at most ~8 KiB.
MAX_QUEUED_EVENTS = 1024


TransportEvent = Event | LinkDown | LinkUp

__all__ = ["LinkDown", "LinkUp", "Transport", "TransportEvent", "open_port", "wait_until"]


def open_port(port: str, baud: int, read_timeout_s: float = 0.05) -> Any:
    """Open a device path or a pyserial URL (loop://, socket://, rfc2217://...)."""
    try:
        if "://" in port:
            return serial.serial_for_url(port, baudrate=baud, timeout=read_timeout_s)
        return serial.Serial(port, baudrate=baud, timeout=read_timeout_s)
    except (serial.SerialException, OSError, ValueError) as err:
        raise DeviceError(f"cannot open {port}: {_short(err)}") from None


def _short(err: BaseException) -> str:
    text = str(err).strip() or type(err).__name__
    # pyserial wraps OSError texts as "[Errno 2] could not open port X: [Errno 2] No such..."
    return text.split(": ", 1)[-1] if text.startswith("[Errno") else text


class Transport:
    def __init__(
        self,
        port: str,
        *,
        baud: int = 115200,
        codec: Codec | None = None,
        reconnect: bool = True,
        reopen_interval_s: float = 0.2,
    ) -> None:
        self.port = port
        self.baud = baud
        self.codec = codec or Codec()
        self.reconnect = reconnect
        self.reopen_interval_s = reopen_interval_s
        self.events_dropped = 0
        self.link_downs = 0
        self._serial: Any = None
        self._lock = threading.Lock()  # guards _serial between reader and senders
        self._flushes = 0  # discard_input() calls, so the reader can tell a flush from an unplug
        self._events: queue.Queue[tuple[TransportEvent, float]] = queue.Queue()
        # Codec time per spectrum handed out by get(), keyed by id(frame) until the consumer
        # asks for it (decode_ms()); bounded so unclaimed entries cannot accumulate.
        self._decode_ms: dict[int, float] = {}
        self._stop = threading.Event()
        self._thread: threading.Thread | None = None

    @property
    def connected(self) -> bool:
        return self._serial is not None

    def start(self) -> None:
        """Open the port (raises DeviceError if that fails) and start the reader thread."""
        self._serial = open_port(self.port, self.baud)
        self._thread = threading.Thread(target=self._run, name=f"reader {self.port}", daemon=True)
        self._thread.start()

    def close(self) -> None:
        self._stop.set()
        if self._thread is not None:
            self._thread.join(timeout=2)
        with self._lock:
            self._close_serial()

    def send(self, data: bytes) -> None:
        """Write bytes; raises DeviceError when the link is down (the caller may retry)."""
        with self._lock:
            if self._serial is None:
                raise DeviceError(f"{self.port} is disconnected")
            try:
                self._serial.write(data)
                self._serial.flush()
            except (serial.SerialException, OSError) as err:
                raise DeviceError(f"write to {self.port} failed: {_short(err)}") from None

    def discard_input(self) -> None:
        """Drop bytes the OS and the codec hold, and queued events (stale data)."""
        with self._lock:
            self._flushes += 1
            if self._serial is not None:
                with contextlib.suppress(serial.SerialException, OSError):
                    self._serial.reset_input_buffer()
            self.codec.reset()
        while True:
            try:
                self._events.get_nowait()
            except queue.Empty:
                break

    def get(self, timeout_s: float | None) -> TransportEvent | None:
        """Next event, or None after `timeout_s`."""
        try:
            event, decode_ms = self._events.get(timeout=timeout_s)
        except queue.Empty:
            return None
        if isinstance(event, SpectrumFrame):
            if len(self._decode_ms) >= 4 * MAX_QUEUED_EVENTS:
                self._decode_ms.pop(next(iter(self._decode_ms)))
            self._decode_ms[id(event)] = decode_ms
        return event

    def decode_ms(self, frame: SpectrumFrame) -> float | None:
        """Time the codec spent turning bytes into `frame` (deframe, CRC, parse); once per frame."""
        return self._decode_ms.pop(id(frame), None)

    # -- reader thread -------------------------------------------------------------------

    def _put(self, event: TransportEvent, decode_ms: float = 0.0) -> None:
        if self._events.qsize() >= MAX_QUEUED_EVENTS:
            try:
                self._events.get_nowait()
                self.events_dropped += 1
            except queue.Empty:
                pass
        self._events.put((event, decode_ms))

    def _close_serial(self) -> None:
        if self._serial is not None:
            with contextlib.suppress(serial.SerialException, OSError):
                self._serial.close()
            self._serial = None

    def _run(self) -> None:
        while not self._stop.is_set():
            ser = self._serial
            if ser is None:
                if not self.reconnect:
                    return
                self._stop.wait(self.reopen_interval_s)
                try:
                    new = open_port(self.port, self.baud)
                except DeviceError:
                    continue
                with self._lock:
                    self._serial = new
                    self.codec.reset()
                self._put(LinkUp(self.port))
                continue
            flushes = self._flushes
            try:
                data = ser.read(max(1, ser.in_waiting))
            except (serial.SerialException, OSError, TypeError, AttributeError) as err:
                # TypeError/AttributeError: pyserial internals after a concurrent close.
                if self._stop.is_set():
                    return
                if self._flushes != flushes and isinstance(err, serial.SerialException):
                    # discard_input() flushed the OS buffer between pyserial's select and its
                    # read; pyserial reports the empty read as "device reports readiness to
                    # read but returned no data". Not an unplug: a real one fails again next.
                    continue
                with self._lock:
                    self._close_serial()
                self.link_downs += 1
                self._put(LinkDown(self.port, _short(err)))
                continue
            if not data:
                continue
            with self._lock:  # discard_input() may reset the codec from another thread
                self.codec.feed(data)
                events = []
                # Each event carries the cost of decoding its own frame (the codec times it),
                # not the time since the read started.
                while (event := self.codec.next_event()) is not None:
                    events.append((event, self.codec.last_decode_ms))
            for event, decode_ms in events:
                self._put(event, decode_ms)


def wait_until(predicate: Any, timeout_s: float, interval_s: float = 0.01) -> bool:
    """Poll `predicate()` until true or timeout (for tests and the CLI)."""
    end = time.monotonic() + timeout_s
    while time.monotonic() < end:
        if predicate():
            return True
        time.sleep(interval_s)
    return bool(predicate())
