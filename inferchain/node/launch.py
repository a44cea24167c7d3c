"""Start span nodes as separate OS processes on 127.0.0.1 and wait until they listen (tests, benchmarks, demo).

Nodes started here share one machine, so each gets its share of the cores as torch threads (`threads_per_node`)
unless the caller says otherwise: with every node using all cores, nodes computing at the same time (concurrent
sessions pipeline through the chain) oversubscribe the cores, and OpenMP's spinning barriers then wait on threads
that are not running. Measured on 2 cores, 8 concurrent streams through a 3-node chain: 5 tokens/s with torch's
default threads, 33 tokens/s with one thread per node (bench/gateway.py --node-threads).
"""

from __future__ import annotations

import json
import os
import signal
import subprocess
import sys
import time
from collections.abc import Iterator, Sequence
from contextlib import contextmanager
from dataclasses import dataclass, field
from pathlib import Path


class NodeStartError(RuntimeError):
    """A node process exited or did not become ready in time; the message carries its log tail."""


def threads_per_node(nodes: int) -> int:
    """Torch threads for each of `nodes` node processes sharing this machine's cores (at least one)."""
    return max(1, (os.cpu_count() or 1) // max(1, nodes))


@dataclass
class LocalNode:
    layers: tuple[int, int]
    data_dir: Path
    process: subprocess.Popen
    log_path: Path
    ready_path: Path
    addrs: list[str] = field(default_factory=list)
    peer_id: str = ""

    @property
    def addr(self) -> str:
        return self.addrs[0]

    def log_tail(self, n: int = 20) -> str:
        try:
            return "\n".join(self.log_path.read_text(errors="replace").splitlines()[-n:])
        except FileNotFoundError:
            return ""

    def wait_ready(self, timeout_s: float) -> None:
        deadline = time.monotonic() + timeout_s
        while time.monotonic() < deadline:
            if self.ready_path.exists():
                data = json.loads(self.ready_path.read_text())
                self.addrs, self.peer_id = data["addrs"], data["peer_id"]
                return
            if self.process.poll() is not None:
                raise NodeStartError(f"node {self.layers} exited with {self.process.returncode}:\n{self.log_tail()}")
            time.sleep(0.05)
        raise NodeStartError(f"node {self.layers} not ready after {timeout_s:.0f} s:\n{self.log_tail()}")

    def kill(self) -> None:
        if self.process.poll() is None:
            self.process.kill()
            self.process.wait(timeout=10)

    def stop(self) -> None:
        if self.process.poll() is None:
            self.process.send_signal(signal.SIGINT)
            try:
                self.process.wait(timeout=5)
            except subprocess.TimeoutExpired:
                self.kill()


def start_node(
    layers: tuple[int, int],
    data_dir: Path,
    model: Path | None = None,
    extra_args: Sequence[str] = (),
    env: dict[str, str] | None = None,
    sharing: int = 1,
) -> LocalNode:
    """Start one node process. `sharing`: how many node processes share this machine's cores (sets `--threads`
    unless `extra_args` does)."""
    data_dir.mkdir(parents=True, exist_ok=True)
    ready = data_dir / "ready.json"
    ready.unlink(missing_ok=True)
    log_path = data_dir / "node.log"
    cmd = [
        sys.executable,
        "-m",
        "inferchain.cli",
        "node",
        "start",
        "--layers",
        f"{layers[0]}:{layers[1]}",
        "--host",
        "127.0.0.1",
        "--data-dir",
        str(data_dir),
        "--ready-file",
        str(ready),
        "--json",
    ]
    if model is not None:
        cmd += ["--model", str(model)]
    if "--wallet" not in extra_args:
        cmd.append("--free")  # a private test swarm: paid mode needs a registered, staked wallet
    if "--threads" not in extra_args:
        cmd += ["--threads", str(threads_per_node(sharing))]
    cmd += list(extra_args)
    with open(log_path, "wb") as log:
        process = subprocess.Popen(cmd, stdout=log, stderr=subprocess.STDOUT, env={**os.environ, **(env or {})})
    return LocalNode(layers, data_dir, process, log_path, ready)


@contextmanager
def local_swarm(
    spans: Sequence[tuple[int, int]],
    workdir: Path,
    model: Path | None = None,
    extra_args: Sequence[str] = (),
    env: dict[str, str] | None = None,
    timeout_s: float = 120.0,
) -> Iterator[list[LocalNode]]:
    """Start one node process per span; yield them once all listen; kill them all on exit."""
    nodes: list[LocalNode] = []
    try:
        for i, span in enumerate(spans):
            nodes.append(start_node(span, workdir / f"node{i}", model, extra_args, env, sharing=len(spans)))
        for node in nodes:
            node.wait_ready(timeout_s)
        yield nodes
    finally:
        for node in nodes:
            node.kill()
