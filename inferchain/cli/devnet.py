"""`inferchain devnet up|down|status`: the local Hardhat chain with the contracts deployed.

Registered by the main app as `app.add_typer(devnet.app, name="devnet")`. Heavy imports (web3) happen
inside the commands.
"""

from __future__ import annotations

import contextlib
import json
from collections.abc import Callable
from pathlib import Path
from typing import Any, NoReturn, TypeVar

import typer
from rich.console import Console
from rich.table import Table

app = typer.Typer(
    name="devnet",
    help="Local development chain: a Hardhat node on 127.0.0.1 with the inferchain contracts deployed.",
    no_args_is_help=True,
)

T = TypeVar("T")

console = Console()
err_console = Console(stderr=True)

DATA_DIR_HELP = (
    "Data folder for PID, log, devnet.json and deployment.json (default: $INFERCHAIN_HOME or ~/.inferchain)."
)
JSON_HELP = "Print machine-readable JSON instead of tables."


def _data_dir(value: Path | None) -> Path:
    from inferchain.wallet.deployment import default_home

    return (value or default_home()).expanduser().resolve()


def _fail(message: str, as_json: bool, code: int = 1) -> NoReturn:
    if as_json:
        print(json.dumps({"ok": False, "error": message}))
    else:
        err_console.print(f"[bold red]error:[/] {message}")
    raise typer.Exit(code)


def _render(info: dict[str, Any], title: str) -> None:
    table = Table(title=title, show_header=False, title_justify="left")
    table.add_column(style="bold cyan")
    table.add_column()
    state = "[green]running[/]" if info["running"] else "[red]stopped[/]"
    table.add_row("state", state)
    for key in ("rpc_url", "chain_id", "block", "pid", "data_dir", "log_file", "deployment_file"):
        if info.get(key) is not None:
            table.add_row(key.replace("_", " "), str(info[key]))
    for name, address in (info.get("addresses") or {}).items():
        table.add_row(name.replace("_", " "), address)
    if info.get("problem"):
        table.add_row("problem", f"[yellow]{info['problem']}[/]")
    console.print(table)
    accounts = info.get("accounts") or []
    if accounts:
        console.print(
            f"[bold]{len(accounts)} funded development accounts[/] (Hardhat's public test keys, devnet only; "
            "keys in devnet.json):"
        )
        for i, address in enumerate(accounts):
            console.print(f"  [dim]{i:>2}[/] {address}")


def _guarded(action: Callable[[], T], as_json: bool) -> T:
    """Runs `action`, turning the wallet's expected failures into a clear message and exit code 1."""
    from inferchain.wallet.deployment import DeploymentError
    from inferchain.wallet.devnet import DevnetError
    from inferchain.wallet.tx import TransactionFailed

    try:
        return action()
    except (DevnetError, DeploymentError, TransactionFailed, OSError) as exc:
        _fail(str(exc), as_json)


@app.command()
def up(
    data_dir: Path | None = typer.Option(None, "--data-dir", help=DATA_DIR_HELP),
    port: int = typer.Option(0, "--port", min=0, max=65535, help="RPC port on 127.0.0.1 (0: a free one)."),
    accounts: int = typer.Option(10, "--accounts", min=0, max=20, help="How many test accounts to fund."),
    fund: int = typer.Option(1_000_000, "--fund", min=0, help="INFER minted to each funded account."),
    timeout: float = typer.Option(60.0, "--timeout", min=1.0, help="Seconds to wait for the node to answer."),
    as_json: bool = typer.Option(False, "--json", help=JSON_HELP),
) -> None:
    """Start the devnet in the background, deploy the contracts and fund test accounts."""
    from inferchain.wallet import devnet
    from inferchain.wallet.deployment import ONE_TOKEN

    folder = _data_dir(data_dir)
    spinner = contextlib.nullcontext() if as_json else console.status("starting devnet")
    with spinner as live:

        def progress(msg: str) -> None:
            if live is not None:
                live.update(msg)
                console.print(f"[dim]•[/] {msg}")

        status, started = _guarded(
            lambda: devnet.up(
                folder,
                port=port or None,
                accounts=accounts,
                fund=fund * ONE_TOKEN,
                timeout_s=timeout,
                progress=progress,
            ),
            as_json,
        )
    info = status.to_json()
    if as_json:
        print(json.dumps({"ok": True, "started": started, **info}))
        return
    _render(info, "devnet started" if started else "devnet already running")


@app.command()
def down(
    data_dir: Path | None = typer.Option(None, "--data-dir", help=DATA_DIR_HELP),
    as_json: bool = typer.Option(False, "--json", help=JSON_HELP),
) -> None:
    """Stop the devnet (by the PID recorded in the data folder)."""
    from inferchain.wallet import devnet

    folder = _data_dir(data_dir)
    stopped = _guarded(lambda: devnet.down(folder), as_json)
    if as_json:
        print(json.dumps({"ok": True, "stopped": stopped, "data_dir": str(folder)}))
    elif stopped:
        console.print(f"[green]devnet stopped[/] ({folder})")
    else:
        console.print(f"no devnet was running ({folder})")


@app.command()
def status(
    data_dir: Path | None = typer.Option(None, "--data-dir", help=DATA_DIR_HELP),
    as_json: bool = typer.Option(False, "--json", help=JSON_HELP),
) -> None:
    """Show whether the devnet runs, its RPC URL, block height and contract addresses (exit 1 if stopped)."""
    from inferchain.wallet import devnet

    folder = _data_dir(data_dir)
    st = _guarded(lambda: devnet.status(folder), as_json)
    info = st.to_json()
    if as_json:
        print(json.dumps({"ok": True, **info}))
    else:
        _render(info, "devnet")
    if not st.running:
        raise typer.Exit(1)
