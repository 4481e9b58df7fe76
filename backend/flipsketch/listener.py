"""The listening socket and the connection rules of `flipsketch serve`.

uvicorn times out idle keep-alive connections but not a client that connects
and then sends its request head slowly or never (each one holds a socket and a
file descriptor). `TimedH11Protocol` drops such a client after
HEADER_TIMEOUT_S; uvicorn's `limit_concurrency` answers 503 beyond
MAX_CONNECTIONS. The socket is bound so that a restart on the same port works
at once after a shutdown with clients still connected.
"""

from __future__ import annotations

import asyncio
import os
import socket

import psutil
from uvicorn.protocols.http.h11_impl import H11Protocol

from flipsketch.errors import FlipSketchError

HEADER_TIMEOUT_S = 10.0  # from connecting (or the last response) to a complete request head
KEEP_ALIVE_S = 5  # an idle keep-alive connection is closed after this
MAX_CONNECTIONS = 256  # uvicorn's limit_concurrency: more get 503
BACKLOG = 2048  # uvicorn's default listen backlog
WILDCARDS = ("0.0.0.0", "::", "")


def bind(host: str, port: int) -> socket.socket:
    """A TCP socket bound to host:port (port 0: a free one) and listening, so a
    client that connects as soon as the ready file appears (written at the app's
    startup, before uvicorn serves the socket) waits in the backlog instead of
    being refused.

    POSIX: SO_REUSEADDR, so connections of a stopped server left in TIME_WAIT
    do not block a restart (a port with a live listener still refuses).
    Windows: SO_EXCLUSIVEADDRUSE, so no other program can bind over us."""
    sock = socket.socket(socket.AF_INET6 if ":" in host else socket.AF_INET, socket.SOCK_STREAM)
    if os.name == "nt":
        sock.setsockopt(socket.SOL_SOCKET, socket.SO_EXCLUSIVEADDRUSE, 1)
    else:
        sock.setsockopt(socket.SOL_SOCKET, socket.SO_REUSEADDR, 1)
    try:
        sock.bind((host, port))
    except OSError as exc:
        sock.close()
        raise FlipSketchError(
            f"Cannot listen on {host}:{port}: {exc.strerror}.",
            "Another program uses that port: pick another --port, or --port 0 for a free one.",
        ) from None
    sock.listen(BACKLOG)
    return sock


def allowed_hosts(host: str, extra: list[str]) -> set[str] | None:
    """Host names a request may carry in its Host header (DNS-rebinding
    defence): the bound address, loopback names and `extra`; for a wildcard
    bind also this machine's names and interface addresses. None (no check)
    when `extra` holds '*'."""
    if "*" in extra:
        return None
    names = {"localhost", "127.0.0.1", "::1", host.lower(), *(name.lower() for name in extra)}
    if host in WILDCARDS:
        names |= {socket.gethostname().lower(), socket.getfqdn().lower()}
        inet = (socket.AF_INET, socket.AF_INET6)
        for addresses in psutil.net_if_addrs().values():
            names |= {a.address.split("%")[0].lower() for a in addresses if a.family in inet}
    return names


def host_name(header: str) -> str:
    """The name part of a Host header: 'a:80' -> 'a', '[::1]:80' -> '::1'."""
    header = header.strip().lower()
    if header.startswith("["):
        return header[1 : header.find("]")] if "]" in header else header
    name, colon, port = header.rpartition(":")
    return name if colon and port.isdigit() and ":" not in name else header


class TimedH11Protocol(H11Protocol):
    """uvicorn's h11 protocol with a deadline for each request head."""

    _head_deadline: asyncio.TimerHandle | None = None

    def connection_made(self, transport: asyncio.Transport) -> None:  # type: ignore[override]
        super().connection_made(transport)
        self._await_head()

    def handle_events(self) -> None:
        cycle = self.cycle
        super().handle_events()
        if self.cycle is not cycle:  # a request head arrived
            self._cancel_deadline()

    def on_response_complete(self) -> None:
        self._await_head()  # before: a pipelined request may start inside
        super().on_response_complete()

    def connection_lost(self, exc: Exception | None) -> None:
        self._cancel_deadline()
        super().connection_lost(exc)

    def _await_head(self) -> None:
        self._cancel_deadline()
        self._head_deadline = self.loop.call_later(HEADER_TIMEOUT_S, self._drop)

    def _cancel_deadline(self) -> None:
        if self._head_deadline is not None:
            self._head_deadline.cancel()
            self._head_deadline = None

    def _drop(self) -> None:
        self._head_deadline = None
        if not self.transport.is_closing():
            self.transport.close()
