"""`inferchain node start`: serve a span of a model on a libp2p host."""

from __future__ import annotations

import os
import sys
import time
from pathlib import Path

import typer

from inferchain.cli.output import console, emit_json, fail

app = typer.Typer(help="Run and manage a span node.", no_args_is_help=True)


def parse_layers(text: str) -> tuple[int, int]:
    try:
        a, b = (int(x) for x in text.split(":"))
    except ValueError:
        fail(f"--layers must look like START:END (e.g. 0:10), got {text!r}")
    if not 0 <= a < b:
        fail(f"--layers {text}: need 0 <= START < END")
    return a, b


def data_home() -> Path:
    return Path(os.environ.get("INFERCHAIN_HOME", Path.home() / ".inferchain"))


@app.command()
def start(
    layers: str = typer.Option(..., help="Layers to serve, START:END (end exclusive), e.g. 0:10."),
    model: Path | None = typer.Option(None, help="Prepared model folder (default: the bundled SmolLM2)."),
    host: str = typer.Option("127.0.0.1", help="Address to listen on."),
    port: int = typer.Option(0, help="TCP port (0: any free port)."),
    data_dir: Path | None = typer.Option(None, help="Node data folder (identity key, ready file)."),
    ready_file: Path | None = typer.Option(None, help="Write the node's addresses as JSON here once it listens."),
    max_sessions: int = typer.Option(16, min=1),
    max_length: int = typer.Option(2048, min=1, help="Most tokens one session may hold."),
    cache_mb: int = typer.Option(512, min=1, help="KV cache memory all sessions may reserve, MiB."),
    idle_timeout: float = typer.Option(300.0, min=0.1, help="Seconds before an idle session is dropped."),
    threads: int = typer.Option(0, min=0, help="Torch threads (0: torch's default)."),
    json_output: bool = typer.Option(False, "--json", help="Print machine-readable lines instead of a status line."),
) -> None:
    """Load layers START:END of the model and serve them until interrupted."""
    import torch
    import trio
    from rich.progress import BarColumn, MofNCompleteColumn, Progress, TextColumn

    from inferchain.models.folder import ModelFolderError
    from inferchain.models.prepare import default_model_dir
    from inferchain.models.span import SpanError, SpanModel
    from inferchain.node.run import NodeAddress, serve, write_ready_file
    from inferchain.node.server import SpanServer
    from inferchain.node.sessions import SessionLimits

    if threads:
        torch.set_num_threads(threads)
    start_layer, end_layer = parse_layers(layers)
    folder = model or default_model_dir()
    home = data_dir or data_home() / "node"
    home.mkdir(parents=True, exist_ok=True)
    try:
        with Progress(
            TextColumn("loading layers {task.fields[span]}"),
            BarColumn(),
            MofNCompleteColumn(),
            console=console,
            transient=True,
            disable=json_output or not sys.stdout.isatty(),
        ) as progress:
            task = progress.add_task("load", total=None, span=layers)
            span = SpanModel(
                folder,
                start_layer,
                end_layer,
                progress=lambda n, total: progress.update(task, completed=n, total=total),
            )
    except (ModelFolderError, SpanError) as e:
        fail(str(e))
    server = SpanServer(
        span,
        SessionLimits(
            max_sessions=max_sessions,
            max_length=max_length,
            cache_budget_bytes=cache_mb * 1024 * 1024,
            idle_timeout_s=idle_timeout,
        ),
    )
    ready_callbacks = [write_ready_file(ready_file)] if ready_file else []

    def on_ready(address: NodeAddress) -> None:
        for cb in ready_callbacks:
            cb(address)
        if json_output:
            emit_json(
                {
                    "event": "ready",
                    "peer_id": address.peer_id,
                    "addrs": address.addrs,
                    "model_id": span.info.model_id,
                    "layers": [start_layer, end_layer],
                }
            )
        else:
            console.print(f"[green]serving[/] layers {start_layer}:{end_layer} of {span.info.manifest.name}")
            for a in address.addrs:
                console.print(f"  {a}")
        sys.stdout.flush()

    last = {"t": time.monotonic(), "tokens": 0}

    def on_tick(s: SpanServer) -> None:
        if json_output or not sys.stdout.isatty():
            return
        now = time.monotonic()
        rate = (s.stats.tokens - last["tokens"]) / max(now - last["t"], 1e-9)
        last.update(t=now, tokens=s.stats.tokens)
        console.print(
            f"sessions {len(s.sessions)}/{s.sessions.limits.max_sessions}  tokens {s.stats.tokens}  "
            f"{rate:.1f} tok/s  errors {s.stats.errors}",
            end="\r",
        )

    try:
        trio.run(lambda: serve(server, home / "identity.key", host, port, on_ready, on_tick))
    except KeyboardInterrupt:
        console.print("\nstopped")
    except OSError as e:
        fail(f"cannot listen on {host}:{port}: {e}")
