"""The `inferchain` command: one typer app whose sub-commands live one module per concern.

Owns argument parsing and terminal output only; every command calls into a room. Heavy imports (torch,
libp2p, web3) happen inside commands so that `inferchain --help` stays fast.
"""

from __future__ import annotations

import typer

app = typer.Typer(
    name="inferchain",
    help="A peer-to-peer market for LLM inference.",
    no_args_is_help=True,
    pretty_exceptions_enable=False,
)


def _register() -> None:
    from inferchain.cli import chat, demo, devnet, escrow, market, model, node, reseller, swarm, wallet

    app.add_typer(model.app, name="model")
    app.add_typer(node.app, name="node")
    app.add_typer(devnet.app, name="devnet")
    app.add_typer(wallet.app, name="wallet")
    app.add_typer(escrow.app, name="escrow")
    app.add_typer(reseller.app, name="reseller")
    app.add_typer(market.app, name="market")
    app.add_typer(__import__("inferchain.cli.validator", fromlist=["app"]).app, name="validator")
    app.command("chat")(chat.chat)
    app.command("swarm")(swarm.swarm)
    app.add_typer(demo.app, name="demo")


_register()


def main() -> None:
    app()
