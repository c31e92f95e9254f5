"""Bind the listening socket (a clear error if the port is taken) and run the app with uvicorn.

Ctrl-C or SIGTERM cancels every queued and running generation first (each stops within one
step), then uvicorn closes the connections and the worker thread ends.
"""

from __future__ import annotations

import signal
import socket

from ..errors import UserError

GRACEFUL_S = 5  # open streams get this long to end after a stop signal


def bind(host: str, port: int) -> socket.socket:
    """A listening TCP socket on ``host:port`` (port 0: a free one)."""
    try:
        info = socket.getaddrinfo(host, port, type=socket.SOCK_STREAM, flags=socket.AI_PASSIVE)[0]
        sock = socket.socket(info[0], socket.SOCK_STREAM)
        sock.setsockopt(socket.SOL_SOCKET, socket.SO_REUSEADDR, 1)
        sock.bind(info[4])
        sock.listen(128)
    except OSError as e:
        raise UserError(f"cannot listen on {host}:{port}: {e.strerror or e}") from None
    sock.set_inheritable(True)
    return sock


def serve(app, sock: socket.socket, log_level: str = "warning") -> None:
    """Serve until Ctrl-C or SIGTERM, then return (both are a normal stop)."""
    import uvicorn

    worker = app.state.worker

    class Server(uvicorn.Server):
        def handle_exit(self, sig, frame):
            worker.cancel_all()
            super().handle_exit(sig, frame)

    config = uvicorn.Config(app, log_level=log_level, timeout_graceful_shutdown=GRACEFUL_S, access_log=False)
    previous = signal.signal(signal.SIGTERM, _exit_quietly)  # uvicorn re-raises the signal once it has stopped
    try:
        Server(config).run(sockets=[sock])
    except (KeyboardInterrupt, _Stopped):
        pass
    finally:
        signal.signal(signal.SIGTERM, previous)
        sock.close()


class _Stopped(Exception):
    pass


def _exit_quietly(sig, frame):
    raise _Stopped
