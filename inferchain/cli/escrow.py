"""`inferchain escrow`: a buyer's or reseller's deposit on the escrow contract — status, deposit, delayed
withdrawal, and authorising another key (e.g. a market's gateway key) to countersign receipts paid from it."""

from __future__ import annotations

import time

import typer

from inferchain.cli.node import (
    DeploymentOption,
    JsonOption,
    PassphraseFileOption,
    RpcUrlOption,
    WalletOption,
    YesOption,
)
from inferchain.cli.output import console

app = typer.Typer(help="A payer's escrow deposit: status, deposit, withdraw, authorise a countersigning key.")


def _act(plan_of, wallet, passphrase_file, deployment, rpc_url, as_json, yes) -> None:
    from inferchain.cli.wallet import guarded, open_chain, run_plan, unlock
    from inferchain.wallet.payer import Payer

    payer = Payer(open_chain(deployment, rpc_url, as_json), unlock(wallet, passphrase_file, as_json))
    run_plan(guarded(lambda: plan_of(payer), as_json), as_json, yes)


def _amount(text: str, as_json: bool) -> int:
    from inferchain.cli.wallet import guarded
    from inferchain.wallet.operator import parse_amount

    return guarded(lambda: parse_amount(text), as_json)


@app.command()
def status(
    wallet: WalletOption = None,
    deployment: DeploymentOption = None,
    rpc_url: RpcUrlOption = None,
    as_json: JsonOption = False,
) -> None:
    """The wallet's INFER, its escrow deposit and any pending withdrawal (no passphrase needed)."""
    from inferchain.cli.wallet import emit, guarded, open_chain, wallet_address
    from inferchain.wallet.operator import fmt_token
    from inferchain.wallet.payer import escrow_status

    name, address = wallet_address(wallet, as_json)
    chain = open_chain(deployment, rpc_url, as_json)
    info = guarded(lambda: escrow_status(chain, address), as_json)
    if as_json:
        emit({"wallet": name, **info})
        return
    console.print(f"{name} ({address})")
    console.print(f"  INFER in wallet  {fmt_token(int(info['infer']))}")
    console.print(f"  escrow deposit   {fmt_token(int(info['escrow']))}")
    w = info["withdrawal"]
    if w:
        when = time.strftime("%Y-%m-%d %H:%M:%S UTC", time.gmtime(w["available_at"]))
        console.print(f"  withdrawal       {fmt_token(int(w['amount']))} INFER, possible from {when}")


@app.command()
def deposit(
    amount: str = typer.Argument(..., help="INFER to deposit, e.g. 100 or 0.5."),
    wallet: WalletOption = None,
    passphrase_file: PassphraseFileOption = None,
    deployment: DeploymentOption = None,
    rpc_url: RpcUrlOption = None,
    yes: YesOption = False,
    as_json: JsonOption = False,
) -> None:
    """Approve (when the allowance is short) and deposit AMOUNT INFER into the escrow."""
    wei = _amount(amount, as_json)
    _act(lambda p: p.plan_deposit(wei), wallet, passphrase_file, deployment, rpc_url, as_json, yes)


@app.command("request-withdrawal")
def request_withdrawal(
    amount: str | None = typer.Argument(None, help="INFER to withdraw (default: the whole deposit)."),
    wallet: WalletOption = None,
    passphrase_file: PassphraseFileOption = None,
    deployment: DeploymentOption = None,
    rpc_url: RpcUrlOption = None,
    yes: YesOption = False,
    as_json: JsonOption = False,
) -> None:
    """Ask to withdraw; `withdraw` pays it out after the escrow's delay (receipts may still be paid until then)."""
    wei = None if amount is None else _amount(amount, as_json)
    _act(lambda p: p.plan_request_withdrawal(wei), wallet, passphrase_file, deployment, rpc_url, as_json, yes)


@app.command()
def withdraw(
    wallet: WalletOption = None,
    passphrase_file: PassphraseFileOption = None,
    deployment: DeploymentOption = None,
    rpc_url: RpcUrlOption = None,
    yes: YesOption = False,
    as_json: JsonOption = False,
) -> None:
    """Pay out the pending withdrawal once its delay has passed."""
    _act(lambda p: p.plan_withdraw(), wallet, passphrase_file, deployment, rpc_url, as_json, yes)


@app.command()
def authorize(
    signer: str = typer.Argument(..., help="The address allowed to countersign (e.g. a market's gateway key)."),
    revoke: bool = typer.Option(False, "--revoke", help="Withdraw the authorisation instead."),
    wallet: WalletOption = None,
    passphrase_file: PassphraseFileOption = None,
    deployment: DeploymentOption = None,
    rpc_url: RpcUrlOption = None,
    yes: YesOption = False,
    as_json: JsonOption = False,
) -> None:
    """Allow (or with --revoke stop) SIGNER to countersign receipts paid from this wallet's deposit."""
    _act(lambda p: p.plan_authorize(signer, not revoke), wallet, passphrase_file, deployment, rpc_url, as_json, yes)
