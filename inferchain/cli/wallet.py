"""`inferchain wallet ...`: encrypted keystores, balances; plus the helpers every chain-facing command shares.

Passphrases come from `--passphrase-file`, else $INFERCHAIN_PASSPHRASE, else a hidden prompt. Private keys are
printed by `wallet export` only. Every failure is one line (JSON with `--json`) and exit code 1.
"""

from __future__ import annotations

import json
import os
import re
import sys
from collections.abc import Callable
from pathlib import Path
from typing import TYPE_CHECKING, Any, NoReturn, TypeVar

import typer
from rich.console import Console
from rich.table import Table

if TYPE_CHECKING:
    from eth_account.signers.local import LocalAccount

    from inferchain.wallet.chain import Chain
    from inferchain.wallet.operator import Plan

app = typer.Typer(help="Encrypted wallets (keystore files) and their balances.", no_args_is_help=True)

T = TypeVar("T")
console = Console(highlight=False, soft_wrap=True)
err_console = Console(stderr=True, highlight=False, soft_wrap=True)

PASSPHRASE_ENV = "INFERCHAIN_PASSPHRASE"
WALLET_ENV = "INFERCHAIN_WALLET"
JSON_HELP = "Print one machine-readable JSON object instead of tables."
PASSFILE_HELP = f"Read the passphrase from this file (first line). Else ${PASSPHRASE_ENV}, else a prompt."
DEPLOYMENT_HELP = "Deployment file (default: deployment.json in $INFERCHAIN_HOME, written by `inferchain devnet up`)."
RPC_HELP = "JSON-RPC URL (default: the one recorded in the deployment file)."
YES_HELP = "Do not ask for confirmation."

JsonOpt = typer.Option(False, "--json", help=JSON_HELP)
PassFileOpt = typer.Option(None, "--passphrase-file", help=PASSFILE_HELP)
DeploymentOpt = typer.Option(None, "--deployment", help=DEPLOYMENT_HELP)
RpcOpt = typer.Option(None, "--rpc-url", help=RPC_HELP)
YesOpt = typer.Option(False, "--yes", "-y", help=YES_HELP)


def fail(message: str, as_json: bool = False, code: int = 1) -> NoReturn:
    message = " ".join(str(message).split())  # one line, whatever the library wrote
    unreachable = re.match(
        r"(no Ethereum JSON-RPC answering at \S+?):? .*?(Connection refused|timed out|Name or service)", message
    )
    if unreachable:  # requests' multi-clause error adds nothing but the cause
        message = f"{unreachable.group(1)} ({unreachable.group(2).lower()})"
    if as_json:
        print(json.dumps({"ok": False, "error": message}))
    else:
        err_console.print(f"[bold red]error:[/] {message}", soft_wrap=True)
    raise typer.Exit(code)


def emit(data: dict[str, Any]) -> None:
    print(json.dumps({"ok": True, **data}, default=str))


def guarded(action: Callable[[], T], as_json: bool) -> T:
    """Runs `action`; every expected failure (wallet, chain, RPC, revert) becomes one line and exit 1."""
    from web3.exceptions import Web3Exception

    from inferchain.wallet.deployment import DeploymentError
    from inferchain.wallet.keystore import WalletError
    from inferchain.wallet.operator import OperatorError, explain
    from inferchain.wallet.tx import TransactionFailed

    try:
        return action()
    except (WalletError, OperatorError, DeploymentError) as exc:
        fail(str(exc), as_json)
    except (TransactionFailed, Web3Exception, ValueError) as exc:
        fail(explain(exc), as_json)
    except (OSError, ConnectionError, TimeoutError) as exc:  # includes requests' connection errors
        fail(f"cannot reach the chain: {explain(exc)}", as_json)


def keystore() -> Any:
    from inferchain.wallet.keystore import Keystore

    return Keystore()


def resolve_wallet(name: str | None, as_json: bool = False) -> str:
    """The wallet name to use: given, else $INFERCHAIN_WALLET, else the only wallet there is."""
    if name:
        return name
    if os.environ.get(WALLET_ENV):
        return os.environ[WALLET_ENV]
    wallets = keystore().list()
    if len(wallets) == 1:
        return str(wallets[0].name)
    if not wallets:
        fail("no wallet yet: create one with `inferchain wallet create NAME`", as_json)
    fail(f"several wallets ({', '.join(w.name for w in wallets)}): choose one with --wallet NAME", as_json)


def read_passphrase(passphrase_file: Path | None, *, confirm: bool = False, as_json: bool = False) -> str:
    if passphrase_file is not None:
        try:
            lines = passphrase_file.read_text().splitlines()
        except OSError as exc:
            fail(f"cannot read passphrase file {passphrase_file}: {exc.strerror or exc}", as_json)
        if not lines or not lines[0]:
            fail(f"passphrase file {passphrase_file} is empty", as_json)
        return lines[0]
    env = os.environ.get(PASSPHRASE_ENV)
    if env:
        return env
    if not sys.stdin.isatty():
        fail(f"no passphrase: pass --passphrase-file or set ${PASSPHRASE_ENV} (no terminal to prompt on)", as_json)
    return str(typer.prompt("Passphrase", hide_input=True, confirmation_prompt=confirm))


def unlock(name: str | None, passphrase_file: Path | None, as_json: bool) -> LocalAccount:
    wallet = resolve_wallet(name, as_json)
    keys = keystore()
    guarded(lambda: keys.info(wallet), as_json)  # unknown / corrupt before asking for a passphrase
    passphrase = read_passphrase(passphrase_file, as_json=as_json)
    account: LocalAccount = guarded(lambda: keys.unlock(wallet, passphrase), as_json)
    return account


def wallet_address(name: str | None, as_json: bool) -> tuple[str, str]:
    """(name, address) of a wallet, without decrypting it."""
    wallet = resolve_wallet(name, as_json)
    info = guarded(lambda: keystore().info(wallet), as_json)
    return wallet, str(info.address)


def open_chain(deployment: Path | None, rpc_url: str | None, as_json: bool) -> Chain:
    from inferchain.wallet.chain import Chain

    return guarded(lambda: Chain.open(deployment, rpc_url), as_json)


def run_plan(plan: Plan, as_json: bool, yes: bool) -> dict[str, Any]:
    """Shows what the action will do, asks on a terminal (unless --yes), sends it and waits for receipts."""
    if not as_json:
        console.print(f"[bold]→[/] {plan.description}")
        if not yes and sys.stdin.isatty() and not typer.confirm("Send?", default=True):
            fail("cancelled")
    status = console.status(f"{plan.action}: waiting for the transaction receipt") if not as_json else None
    if status is not None:
        with status:
            outcome = guarded(plan.run, as_json)
    else:
        outcome = guarded(plan.run, as_json)
    result = outcome.to_json()
    if as_json:
        emit(result)
    else:
        for tx in outcome.txs:
            console.print(f"  [green]✓[/] {tx['what']}  block {tx['block']}  gas {tx['gas']:,}  [dim]{tx['tx']}[/]")
    return result


# -- commands ----------------------------------------------------------------------------------------------


@app.command()
def create(
    name: str = typer.Argument(..., help="A name for the wallet (letters, digits, . _ -)."),
    passphrase_file: Path | None = PassFileOpt,
    as_json: bool = JsonOpt,
) -> None:
    """Create a wallet with a new random key, encrypted with a passphrase (scrypt)."""
    keys = keystore()
    guarded(lambda: keys.path(name), as_json)
    if keys.path(name).exists():
        fail(f"a wallet named {name!r} already exists ({keys.path(name)})", as_json)
    passphrase = read_passphrase(passphrase_file, confirm=True, as_json=as_json)
    info = guarded(lambda: keys.create(name, passphrase), as_json)
    if as_json:
        emit(info.to_json())
    else:
        console.print(f"[green]created[/] wallet [bold]{info.name}[/]  {info.address}")
        console.print(f"  [dim]{info.path} (0600). Back it up with `inferchain wallet export {info.name}`.[/]")


@app.command("import")
def import_(
    name: str = typer.Argument(..., help="A name for the wallet."),
    mnemonic: bool = typer.Option(False, "--mnemonic", help="The secret is a BIP-39 mnemonic, not a private key."),
    secret_file: Path | None = typer.Option(
        None, "--from-file", help="Read the private key or mnemonic from this file (else a hidden prompt)."
    ),
    derivation_path: str = typer.Option("m/44'/60'/0'/0/0", help="HD path for --mnemonic."),
    passphrase_file: Path | None = PassFileOpt,
    as_json: bool = JsonOpt,
) -> None:
    """Import a private key or a mnemonic into a new encrypted wallet."""
    keys = keystore()
    guarded(lambda: keys.path(name), as_json)
    if secret_file is not None:
        try:
            secret = secret_file.read_text().strip()
        except OSError as exc:
            fail(f"cannot read {secret_file}: {exc.strerror or exc}", as_json)
    elif sys.stdin.isatty():
        secret = typer.prompt("Mnemonic" if mnemonic else "Private key (hex)", hide_input=True)
    else:
        secret = sys.stdin.readline().strip()
    if not secret:
        fail("no private key or mnemonic given", as_json)
    passphrase = read_passphrase(passphrase_file, confirm=True, as_json=as_json)
    if mnemonic:
        info = guarded(lambda: keys.import_mnemonic(name, secret, passphrase, derivation_path), as_json)
    else:
        info = guarded(lambda: keys.import_private_key(name, secret, passphrase), as_json)
    if as_json:
        emit(info.to_json())
    else:
        console.print(f"[green]imported[/] wallet [bold]{info.name}[/]  {info.address}")


@app.command("list")
def list_(as_json: bool = JsonOpt) -> None:
    """List the wallets (names and addresses; nothing is decrypted)."""
    keys = keystore()
    wallets = keys.list()
    if as_json:
        emit({"wallets": [w.to_json() for w in wallets], "folder": str(keys.folder)})
        return
    if not wallets:
        console.print(f"no wallets in {keys.folder}; create one with `inferchain wallet create NAME`")
        return
    table = Table(show_header=True, header_style="bold", box=None)
    table.add_column("name")
    table.add_column("address")
    for w in wallets:
        table.add_row(w.name, w.address if w.address != "?" else "[red]damaged keystore[/]")
    console.print(table)


@app.command()
def show(name: str | None = typer.Argument(None, help="Wallet name."), as_json: bool = JsonOpt) -> None:
    """Show a wallet's address and keystore file (never the key)."""
    wallet = resolve_wallet(name, as_json)
    info = guarded(lambda: keystore().info(wallet), as_json)
    if as_json:
        emit(info.to_json())
    else:
        console.print(f"[bold]{info.name}[/]  {info.address}\n  [dim]{info.path}[/]")


@app.command()
def export(
    name: str | None = typer.Argument(None, help="Wallet name."),
    passphrase_file: Path | None = PassFileOpt,
    as_json: bool = JsonOpt,
) -> None:
    """Print the wallet's PRIVATE KEY (anyone who sees it controls the funds)."""
    account = unlock(name, passphrase_file, as_json)
    key = "0x" + bytes(account.key).hex()
    if as_json:
        emit({"address": account.address, "private_key": key})
    else:
        err_console.print("[bold yellow]warning:[/] this is the private key; anyone who sees it controls the wallet")
        print(key)


@app.command()
def remove(
    name: str = typer.Argument(..., help="Wallet name."),
    yes: bool = YesOpt,
    as_json: bool = JsonOpt,
) -> None:
    """Delete a wallet's keystore file (the key is lost unless exported or backed up)."""
    keys = keystore()
    if not keys.path(name).exists():
        guarded(lambda: keys.info(name), as_json)  # the unknown-wallet message
    if not yes:
        if not sys.stdin.isatty():
            fail(f"removing wallet {name!r} destroys its key: pass --yes to confirm", as_json)
        typer.confirm(f"Delete wallet {name!r} and its key for good?", abort=True)
    info = guarded(lambda: keys.remove(name), as_json)
    if as_json:
        emit(info.to_json())
    else:
        console.print(f"removed wallet [bold]{info.name}[/] ({info.address})")


def render_balances(b: Any, title: str) -> None:
    from inferchain.wallet.operator import fmt_eth, fmt_token

    table = Table(title=title, show_header=False, title_justify="left", box=None)
    table.add_column(style="bold cyan")
    table.add_column(justify="right")
    table.add_column()
    table.add_row("ETH", fmt_eth(b.eth), "[dim]for gas[/]")
    table.add_row("INFER", fmt_token(b.token), "[dim]in the wallet[/]")
    routable = "[green]routable[/]" if b.routable else "[yellow]not routable[/]"
    reg = "" if b.registered else "[dim]not registered[/]"
    table.add_row("stake", fmt_token(b.stake), f"{routable} (minimum {fmt_token(b.min_stake)}) {reg}".strip())
    if b.unbonding:
        table.add_row("unbonding", fmt_token(b.unbonding), f"[dim]ready at block time {b.unbonding_ready_at}[/]")
    table.add_row("escrow", fmt_token(b.escrow), "[dim]deposit as a buyer[/]")
    table.add_row("earnings", fmt_token(b.earnings), "[dim]settled, claimable now[/]")
    table.add_row("rewards", fmt_token(b.rewards), f"[dim]claimable, epochs {sorted(b.reward_epochs)}[/]")
    console.print(table)


@app.command()
def balance(
    name: str | None = typer.Argument(None, help="Wallet name (default: $INFERCHAIN_WALLET or the only one)."),
    deployment: Path | None = DeploymentOpt,
    rpc_url: str | None = RpcOpt,
    as_json: bool = JsonOpt,
) -> None:
    """ETH, INFER, stake, escrow deposit, settled earnings and claimable rewards of a wallet."""
    from inferchain.wallet.operator import balances

    wallet, address = wallet_address(name, as_json)
    chain = open_chain(deployment, rpc_url, as_json)
    b = guarded(lambda: balances(chain, address), as_json)
    if as_json:
        emit({"wallet": wallet, **b.to_json()})
    else:
        render_balances(b, f"{wallet}  {address}")


@app.command()
def faucet(
    name: str | None = typer.Argument(None, help="Wallet name."),
    eth: float = typer.Option(10.0, min=0, help="ETH to send for gas."),
    infer: float = typer.Option(1000.0, min=0, help="INFER to mint."),
    deployment: Path | None = DeploymentOpt,
    rpc_url: str | None = RpcOpt,
    as_json: bool = JsonOpt,
) -> None:
    """Devnet only: send ETH and mint INFER to a wallet from the devnet's deployer account."""
    from decimal import Decimal

    from web3.types import Wei

    from inferchain.wallet.deployment import ONE_TOKEN, mint
    from inferchain.wallet.devnet import devnet_accounts

    wallet, address = wallet_address(name, as_json)
    chain = open_chain(deployment, rpc_url, as_json)
    deployer = chain.deployment.deployer
    if deployer not in guarded(lambda: chain.w3.eth.accounts, as_json) or deployer != devnet_accounts(1)[0]["address"]:
        fail("the faucet works on the devnet only (its deployer must be an unlocked development account)", as_json)

    def fund() -> dict[str, Any]:
        eth_wei, infer_wei = int(Decimal(str(eth)) * ONE_TOKEN), int(Decimal(str(infer)) * ONE_TOKEN)
        if eth_wei:
            tx = chain.w3.eth.send_transaction({"from": deployer, "to": address, "value": Wei(eth_wei)})
            chain.w3.eth.wait_for_transaction_receipt(tx, timeout=60)
        if infer_wei:
            mint(chain.w3, chain.deployment, deployer, address, infer_wei)
        return {"wallet": wallet, "address": address, "eth": str(eth_wei), "infer": str(infer_wei)}

    result = guarded(fund, as_json)
    if as_json:
        emit(result)
    else:
        console.print(f"[green]funded[/] {wallet} ({address}) with {eth:g} ETH and {infer:g} INFER")
