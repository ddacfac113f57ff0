"""Serving the review app with uvicorn on a socket we bind ourselves: an address that cannot
be bound is said in one line before uvicorn starts, and a caller (a test) asking for port 0
learns the port it got."""

from __future__ import annotations

import socket

import uvicorn
from starlette.applications import Starlette


def listen(host: str, port: int) -> socket.socket:
    """A listening TCP socket on host:port (OSError when it cannot be bound)."""
    family, kind, proto, _, address = socket.getaddrinfo(host, port, type=socket.SOCK_STREAM)[0]
    sock = socket.socket(family, kind, proto)
    try:
        sock.setsockopt(socket.SOL_SOCKET, socket.SO_REUSEADDR, 1)
        sock.bind(address)
        sock.listen(128)
    except OSError:
        sock.close()
        raise
    sock.set_inheritable(True)
    return sock


def make_server(app: Starlette) -> uvicorn.Server:
    """A uvicorn server for `app`, with no access log: a first request's address may carry the
    review token (`?token=`), which no log should keep."""
    config = uvicorn.Config(app, log_level="warning", access_log=False, lifespan="off",
                            server_header=False)
    return uvicorn.Server(config)
