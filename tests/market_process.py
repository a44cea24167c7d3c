"""`inferchain market start` as a separate process for tests: on a free port, ready once its book holds enough live
offers (bounded wait), stopped on exit (terminate, then kill)."""

from __future__ import annotations

import os
import subprocess
import sys
import time
from collections.abc import Iterator, Sequence
from contextlib import contextmanager
from pathlib import Path

import httpx

from inferchain.wallet.devnet import free_port


@contextmanager
def market_process(
    args: Sequence[str], log: Path, env: dict[str, str], live_offers: int, timeout_s: float = 120.0
) -> Iterator[str]:
    """Start `inferchain market start --port P --json ARGS` with `env` added; yields its base URL."""
    port = free_port()
    cmd = [sys.executable, "-m", "inferchain.cli", "market", "start", "--port", str(port), "--json", *args]
    with open(log, "wb") as out:
        proc = subprocess.Popen(cmd, stdout=out, stderr=subprocess.STDOUT, env={**os.environ, **env})
    try:
        url = f"http://127.0.0.1:{port}"
        deadline = time.monotonic() + timeout_s
        with httpx.Client(base_url=url, timeout=10) as http:
            while True:
                assert proc.poll() is None, log.read_text()[-3000:]
                tail = log.read_text()[-3000:]
                assert time.monotonic() < deadline, f"the market never heard {live_offers} offers:\n{tail}"
                try:
                    if http.get("/health").json()["live_offers"] >= live_offers:
                        break
                except httpx.TransportError:
                    pass
                time.sleep(0.3)
        yield url
    finally:
        proc.terminate()
        try:
            proc.wait(timeout=15)
        except subprocess.TimeoutExpired:
            proc.kill()
            proc.wait(timeout=10)
