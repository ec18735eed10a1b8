"""A TCP relay a test can stall and cut: the intermittent radio link between device and broker.

Stopping the broker is not the same fault: on SIGTERM mosquitto still processes what is in its
sockets and acknowledges it. A link that stalls and then drops loses whatever was in transit
and leaves the client holding messages the broker never saw, which is the case that exercises
the client's re-sends.
"""

from __future__ import annotations

import contextlib
import select
import socket
import threading


class Link:
    """Accepts on `port` and relays each connection to 127.0.0.1:`upstream_port`."""

    def __init__(self, upstream_port: int) -> None:
        self.upstream_port = upstream_port
        self._listener = socket.create_server(("127.0.0.1", 0))
        self.port = int(self._listener.getsockname()[1])
        self._lock = threading.Lock()
        self._pairs: list[tuple[socket.socket, socket.socket]] = []
        self._held = threading.Event()
        self._closed = threading.Event()
        self.cuts = 0
        threading.Thread(target=self._accept, name="link-accept", daemon=True).start()

    @property
    def url(self) -> str:
        return f"mqtt://127.0.0.1:{self.port}"

    def hold(self) -> None:
        """Stop carrying bytes either way (they wait in the kernel buffers)."""
        self._held.set()

    def cut(self) -> None:
        """Drop every open connection; what was held is lost. New connections are accepted."""
        with self._lock:
            pairs, self._pairs = self._pairs, []
            self.cuts += 1
        for a, b in pairs:
            for s in (a, b):
                try:
                    s.setsockopt(socket.SOL_SOCKET, socket.SO_LINGER, b"\x01\x00\x00\x00\x00\x00\x00\x00")
                    s.close()  # linger 0: a reset, nothing flushed
                except OSError:
                    pass
        self._held.clear()

    def close(self) -> None:
        self._closed.set()
        self._listener.close()
        self.cut()

    def _accept(self) -> None:
        while not self._closed.is_set():
            try:
                client, _ = self._listener.accept()
            except OSError:
                return
            try:
                upstream = socket.create_connection(("127.0.0.1", self.upstream_port), timeout=5)
            except OSError:
                client.close()
                continue
            with self._lock:
                self._pairs.append((client, upstream))
            threading.Thread(target=self._relay, args=(client, upstream), name="link-relay", daemon=True).start()

    def _relay(self, a: socket.socket, b: socket.socket) -> None:
        peer = {a: b, b: a}
        while not self._closed.is_set():
            if self._held.is_set():
                if a.fileno() < 0:  # cut while held
                    return
                self._closed.wait(0.02)
                continue
            try:
                readable, _, _ = select.select([a, b], [], [], 0.05)
                for s in readable:
                    data = s.recv(65536)
                    if not data:
                        raise OSError("closed")
                    peer[s].sendall(data)
            except (OSError, ValueError):
                for s in (a, b):
                    with contextlib.suppress(OSError):
                        s.close()
                return
