"""Run an ASGI app under uvicorn on a free 127.0.0.1 port in a background thread, for tests over real HTTP."""

from __future__ import annotations

import threading
import time

import uvicorn

from inferchain.wallet.devnet import free_port


def serve_app(app, start_timeout_s: float = 20.0) -> tuple[uvicorn.Server, threading.Thread, str]:
    """Start `app`; returns the server (set `should_exit` to stop it), its thread and its base URL."""
    port = free_port()
    server = uvicorn.Server(uvicorn.Config(app, host="127.0.0.1", port=port, log_level="warning"))
    thread = threading.Thread(target=server.run, daemon=True)
    thread.start()
    deadline = time.monotonic() + start_timeout_s
    while not server.started:
        assert time.monotonic() < deadline and thread.is_alive(), "uvicorn did not start"
        time.sleep(0.02)
    return server, thread, f"http://127.0.0.1:{port}"
