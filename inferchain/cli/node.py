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


# -- the operator's life cycle: on-chain transactions through the wallet --------------------------------------

WALLET_HELP = "Wallet name (default: $INFERCHAIN_WALLET, or the only wallet there is)."


def _operator(wallet: str | None, passphrase_file: Path | None, deployment: Path | None, rpc_url: str | None,
              as_json: bool):  # -> Operator (imports stay inside commands)
    from inferchain.cli.wallet import open_chain, unlock
    from inferchain.wallet.operator import Operator

    account = unlock(wallet, passphrase_file, as_json)
    return Operator(open_chain(deployment, rpc_url, as_json), account)


def _act(plan_of, wallet, passphrase_file, deployment, rpc_url, as_json, yes) -> None:
    from inferchain.cli.wallet import guarded, run_plan

    op = _operator(wallet, passphrase_file, deployment, rpc_url, as_json)
    plan = guarded(lambda: plan_of(op), as_json)
    run_plan(plan, as_json, yes)


@app.command()
def register(
    wallet: str | None = typer.Option(None, "--wallet", help=WALLET_HELP),
    passphrase_file: Path | None = typer.Option(None, "--passphrase-file", help="Passphrase file."),
    deployment: Path | None = typer.Option(None, "--deployment", help="Deployment file."),
    rpc_url: str | None = typer.Option(None, "--rpc-url", help="JSON-RPC URL."),
    yes: bool = typer.Option(False, "--yes", "-y", help="Do not ask for confirmation."),
    as_json: bool = typer.Option(False, "--json", help="Machine-readable output."),
) -> None:
    """Register the wallet as a node on the staking contract (once per wallet)."""
    _act(lambda op: op.plan_register(), wallet, passphrase_file, deployment, rpc_url, as_json, yes)


@app.command()
def stake(
    amount: str = typer.Argument(..., help="INFER to stake, e.g. 100 or 0.5."),
    allow_below_minimum: bool = typer.Option(
        False, "--allow-below-minimum", help="Stake even if the total stays below the routable minimum."
    ),
    wallet: str | None = typer.Option(None, "--wallet", help=WALLET_HELP),
    passphrase_file: Path | None = typer.Option(None, "--passphrase-file", help="Passphrase file."),
    deployment: Path | None = typer.Option(None, "--deployment", help="Deployment file."),
    rpc_url: str | None = typer.Option(None, "--rpc-url", help="JSON-RPC URL."),
    yes: bool = typer.Option(False, "--yes", "-y", help="Do not ask for confirmation."),
    as_json: bool = typer.Option(False, "--json", help="Machine-readable output."),
) -> None:
    """Approve and stake AMOUNT INFER (a node is routable once its stake reaches the minimum)."""
    from inferchain.cli.wallet import guarded
    from inferchain.wallet.operator import parse_amount

    wei = guarded(lambda: parse_amount(amount), as_json)
    _act(lambda op: op.plan_stake(wei, allow_below_minimum), wallet, passphrase_file, deployment, rpc_url, as_json,
         yes)


@app.command()
def unstake(
    amount: str | None = typer.Argument(None, help="INFER to unbond (default: all of the stake)."),
    wallet: str | None = typer.Option(None, "--wallet", help=WALLET_HELP),
    passphrase_file: Path | None = typer.Option(None, "--passphrase-file", help="Passphrase file."),
    deployment: Path | None = typer.Option(None, "--deployment", help="Deployment file."),
    rpc_url: str | None = typer.Option(None, "--rpc-url", help="JSON-RPC URL."),
    yes: bool = typer.Option(False, "--yes", "-y", help="Do not ask for confirmation."),
    as_json: bool = typer.Option(False, "--json", help="Machine-readable output."),
) -> None:
    """Start unbonding stake; `withdraw` pays it out after the unbonding delay."""
    from inferchain.cli.wallet import guarded
    from inferchain.wallet.operator import parse_amount

    wei = guarded(lambda: parse_amount(amount), as_json) if amount is not None else None
    _act(lambda op: op.plan_unstake(wei), wallet, passphrase_file, deployment, rpc_url, as_json, yes)


@app.command()
def withdraw(
    wallet: str | None = typer.Option(None, "--wallet", help=WALLET_HELP),
    passphrase_file: Path | None = typer.Option(None, "--passphrase-file", help="Passphrase file."),
    deployment: Path | None = typer.Option(None, "--deployment", help="Deployment file."),
    rpc_url: str | None = typer.Option(None, "--rpc-url", help="JSON-RPC URL."),
    yes: bool = typer.Option(False, "--yes", "-y", help="Do not ask for confirmation."),
    as_json: bool = typer.Option(False, "--json", help="Machine-readable output."),
) -> None:
    """Withdraw unbonded stake once the unbonding delay has passed."""
    _act(lambda op: op.plan_withdraw(), wallet, passphrase_file, deployment, rpc_url, as_json, yes)


@app.command()
def claim(
    wallet: str | None = typer.Option(None, "--wallet", help=WALLET_HELP),
    passphrase_file: Path | None = typer.Option(None, "--passphrase-file", help="Passphrase file."),
    deployment: Path | None = typer.Option(None, "--deployment", help="Deployment file."),
    rpc_url: str | None = typer.Option(None, "--rpc-url", help="JSON-RPC URL."),
    yes: bool = typer.Option(False, "--yes", "-y", help="Do not ask for confirmation."),
    as_json: bool = typer.Option(False, "--json", help="Machine-readable output."),
) -> None:
    """Claim settled earnings from the escrow and rewards of ended epochs from the reward pool."""
    _act(lambda op: op.plan_claim(), wallet, passphrase_file, deployment, rpc_url, as_json, yes)


@app.command()
def status(
    wallet: str | None = typer.Option(None, "--wallet", help=WALLET_HELP),
    data_dir: Path | None = typer.Option(None, help="Node data folder (for the local receipt summary)."),
    deployment: Path | None = typer.Option(None, "--deployment", help="Deployment file."),
    rpc_url: str | None = typer.Option(None, "--rpc-url", help="JSON-RPC URL."),
    as_json: bool = typer.Option(False, "--json", help="Machine-readable output."),
) -> None:
    """The node's on-chain state (registration, stake, unbonding, earnings, rewards) and its local receipts."""
    from inferchain.cli.wallet import emit, guarded, open_chain, render_balances, wallet_address
    from inferchain.wallet.operator import balances

    name, address = wallet_address(wallet, as_json)
    chain = open_chain(deployment, rpc_url, as_json)
    b = guarded(lambda: balances(chain, address), as_json)
    summary = _receipt_summary(data_dir or data_home() / "node")
    if as_json:
        emit({"wallet": name, **b.to_json(), "receipts": summary})
        return
    render_balances(b, f"node {name}  {address}")
    if summary:
        console.print(
            "receipts  " + "  ".join(f"{state} {n}" for state, n in sorted(summary["by_state"].items()))
            + f"  [dim](unsettled value {summary['unsettled_value_infer']} INFER)[/]"
        )


def _receipt_summary(folder: Path) -> dict:
    return {}
