"""`inferchain node start`: serve a span of a model on a libp2p host."""

from __future__ import annotations

import os
import sys
import time
from dataclasses import dataclass
from pathlib import Path
from typing import Annotated, Any

import typer

from inferchain.cli.output import console, emit_json, fail
from inferchain.models.prepare import data_home

app = typer.Typer(help="Run and manage a span node.", no_args_is_help=True)


def parse_layers(text: str) -> tuple[int, int]:
    try:
        a, b = (int(x) for x in text.split(":"))
    except ValueError:
        fail(f"--layers must look like START:END (e.g. 0:10), got {text!r}")
    if not 0 <= a < b:
        fail(f"--layers {text}: need 0 <= START < END")
    return a, b


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
    precision: str = typer.Option("fp32", help="Weights: fp32 (as stored) or int8 (weight-only, per channel)."),
    batch_weights: bool = typer.Option(
        True,
        help="Batched steps of concurrent sessions run the fp32 projections on oneDNN-packed copies of their "
        "weights where timed faster (costs those weights' memory again; off with --max-sessions 1).",
    ),
    bootstrap: list[str] = typer.Option([], help="A peer to join the network through (repeat); see docs."),
    announce_every: float = typer.Option(5.0, min=0.2, help="Seconds between announcements on the offer topic."),
    json_output: bool = typer.Option(False, "--json", help="Print machine-readable lines instead of a status line."),
    free: bool = typer.Option(False, "--free", help="Serve a private free swarm: no wallet, no receipts."),
    wallet: str | None = typer.Option(None, "--wallet", help="Paid mode: the node's wallet (registered, staked)."),
    passphrase_file: Path | None = typer.Option(None, "--passphrase-file", help="Wallet passphrase file."),
    deployment: Path | None = typer.Option(None, "--deployment", help="Deployment file (default: the devnet's)."),
    rpc_url: str | None = typer.Option(None, "--rpc-url", help="JSON-RPC URL (default: the deployment's)."),
    price: str = typer.Option("0.001", help="Price in INFER per 1000 tokens per layer served."),
    receipt_ttl: int = typer.Option(7 * 86400, min=3600, help="Seconds a signed receipt stays settleable."),
    offer_ttl: int = typer.Option(600, min=10, help="Seconds a signed offer is valid (re-signed at half)."),
    region: str = typer.Option("", help='Paid mode: where the node runs, as its signed offer states it ("eu-west").'),
) -> None:
    """Load layers START:END of the model and serve them until interrupted.

    Paid mode (default) needs a registered and staked wallet; `--free` serves without payment.
    """
    import torch
    import trio
    from rich.progress import BarColumn, MofNCompleteColumn, Progress, TextColumn

    from inferchain.models.folder import ModelFolderError
    from inferchain.models.int8 import Int8KernelError, native_kernel
    from inferchain.models.prepare import default_model_dir
    from inferchain.models.span import SpanError, SpanModel
    from inferchain.node.offers import measure_throughput
    from inferchain.node.run import NodeAddress, serve, write_ready_file
    from inferchain.node.server import SpanServer
    from inferchain.node.sessions import SessionLimits
    from inferchain.wallet.offers import InvalidOffer, check_region

    if threads:
        torch.set_num_threads(threads)
    start_layer, end_layer = parse_layers(layers)
    try:
        check_region(region)
    except InvalidOffer as e:
        fail(f"--region: {e}")
    if region and free:
        fail("--region goes into the signed offer of a paid node; a --free node signs no offer")
    folder = model or default_model_dir()
    home = data_dir or data_home() / "node"
    home.mkdir(parents=True, exist_ok=True)
    paid = None if free else _paid_mode(wallet, passphrase_file, deployment, rpc_url, price, json_output)
    if precision == "int8":  # its one-row kernel: built the first time on this machine (~20 s), then loaded
        try:
            with console.status("int8 kernel: loading (the first time on this machine: building, ~20 s)"):
                native_kernel()
        except Int8KernelError as e:
            fail(str(e))
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
                precision=precision,  # type: ignore[arg-type]  # SpanModel checks the value
                batch_weights=batch_weights and max_sessions > 1,
            )
    except (ModelFolderError, SpanError) as e:
        fail(str(e))
    billing, offers = (None, None) if paid is None else _billing(paid, span, home, receipt_ttl, offer_ttl, region)
    server = SpanServer(
        span,
        billing=billing,
        session_limits=SessionLimits(
            max_sessions=max_sessions,
            max_length=max_length,
            cache_budget_bytes=cache_mb * 1024 * 1024,
            idle_timeout_s=idle_timeout,
        ),
    )
    ready_callbacks = [write_ready_file(ready_file)] if ready_file else []

    def on_ready(address: NodeAddress) -> None:
        if offers is not None:
            offers.sign(address.addrs, measure_throughput(span))
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
                    "paid": paid is not None,
                    "wallet": paid.account.address if paid is not None else None,
                    "offer": offers.current() if offers is not None else None,
                }
            )
        else:
            console.print(f"[green]serving[/] layers {start_layer}:{end_layer} of {span.info.manifest.name}")
            if paid is not None and offers is not None and offers.signed is not None:
                o = offers.signed.offer
                console.print(
                    f"  paid: wallet {paid.account.address}, {price} INFER per 1k tokens per layer, "
                    f"~{o.throughput_milli / 1000:.0f} tok/s measured, offer signed until {o.expiry}"
                )
            else:
                console.print("  free mode: no wallet, no receipts")
            for a in address.addrs:
                console.print(f"  {a}")
        sys.stdout.flush()

    last = {"t": time.monotonic(), "tokens": 0}

    def on_tick(s: SpanServer) -> None:
        if offers is not None:
            offers.current()  # re-signs when half its lifetime has passed
        if json_output or not sys.stdout.isatty():
            return
        now = time.monotonic()
        rate = (s.stats.tokens - last["tokens"]) / max(now - last["t"], 1e-9)
        last.update(t=now, tokens=s.stats.tokens)
        console.print(
            f"sessions {len(s.sessions)}/{s.sessions.limits.max_sessions}  tokens {s.stats.tokens}  "
            f"{rate:.1f} tok/s  errors {s.stats.errors}{_earnings(s)}",
            end="\r",
        )

    try:
        trio.run(
            lambda: serve(
                server,
                home / "identity.key",
                host,
                port,
                on_ready,
                on_tick,
                bootstrap=bootstrap,
                announce_every_s=announce_every,
                signed_offer=offers.current if offers is not None else None,
            )
        )
    except KeyboardInterrupt:
        console.print("\nstopped")
    except OSError as e:
        fail(f"cannot listen on {host}:{port}: {e}")


@dataclass
class _Paid:
    account: Any
    chain: Any
    price_per_1k: int


def _paid_mode(
    wallet: str | None,
    passphrase_file: Path | None,
    deployment: Path | None,
    rpc_url: str | None,
    price: str,
    as_json: bool,
) -> _Paid:
    """Paid traffic needs a wallet that is registered and staked on this deployment; else one line and exit."""
    from inferchain.cli.wallet import WALLET_ENV, guarded, keystore, open_chain, unlock
    from inferchain.cli.wallet import fail as fail_line
    from inferchain.wallet.operator import fmt_token, parse_amount

    if wallet is None and not os.environ.get(WALLET_ENV) and not keystore().list():
        fail_line(
            "paid mode needs a registered, staked wallet (--wallet NAME); use --free for a private free swarm", as_json
        )
    price_wei = guarded(lambda: parse_amount(price), as_json)
    account = unlock(wallet, passphrase_file, as_json)
    chain = open_chain(deployment, rpc_url, as_json)
    info = guarded(lambda: chain.node_info(account.address), as_json)
    if not info["registered"]:
        fail_line(
            f"wallet {account.address} is not registered: run `inferchain node register` (or use --free)", as_json
        )
    if not guarded(lambda: chain.is_routable(account.address), as_json):
        minimum = guarded(lambda: int(chain.contracts.staking.functions.minStake().call()), as_json)
        fail_line(
            f"wallet {account.address} is not staked enough to serve paid traffic ({fmt_token(info['stake'])} of "
            f"{fmt_token(minimum)} INFER, or jailed): run `inferchain node stake` (or use --free)",
            as_json,
        )
    return _Paid(account, chain, price_wei)


def _billing(
    paid: _Paid, span: Any, home: Path, receipt_ttl: int, offer_ttl: int, region: str
) -> tuple[Any, Any]:
    from inferchain.node.offers import OFFER_FILE, OfferSigner
    from inferchain.node.receipts import ReceiptSigner, ReceiptStore, SessionBilling
    from inferchain.wallet.offers import model_id_bytes32

    dep = paid.chain.deployment
    store = ReceiptStore(home)
    signer = ReceiptSigner(
        store, paid.account, dep.receipt_domain, paid.price_per_1k, receipt_ttl, paid.chain.authorized_signers()
    )
    billing = SessionBilling(signer, model_id_bytes32(span.info.model_id), span.precision)
    offers = OfferSigner(
        paid.account,
        dep.verdict_domain,  # offers are signed in the staking contract's domain
        span.info.model_id,
        (span.start, span.end),
        paid.price_per_1k,
        ttl_s=offer_ttl,
        path=home / OFFER_FILE,
        region=region,
    )
    return billing, offers


def _earnings(server: Any) -> str:
    if server.billing is None:
        return ""
    from inferchain.wallet.operator import fmt_token

    return f"  receipts {server.stats.receipts}  earned {fmt_token(server.billing.signer.earned_wei)} INFER"


# -- the operator's life cycle: on-chain transactions through the wallet --------------------------------------

WALLET_HELP = "Wallet name (default: $INFERCHAIN_WALLET, or the only wallet there is)."
# The options every chain command shares, declared once.
WalletOption = Annotated[str | None, typer.Option("--wallet", help=WALLET_HELP)]
PassphraseFileOption = Annotated[Path | None, typer.Option("--passphrase-file", help="Passphrase file.")]
DeploymentOption = Annotated[Path | None, typer.Option("--deployment", help="Deployment file.")]
RpcUrlOption = Annotated[str | None, typer.Option("--rpc-url", help="JSON-RPC URL.")]
YesOption = Annotated[bool, typer.Option("--yes", "-y", help="Do not ask for confirmation.")]
JsonOption = Annotated[bool, typer.Option("--json", help="Machine-readable output.")]


def _operator(
    wallet: str | None, passphrase_file: Path | None, deployment: Path | None, rpc_url: str | None, as_json: bool
):  # -> Operator (imports stay inside commands)
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
    wallet: WalletOption = None,
    passphrase_file: PassphraseFileOption = None,
    deployment: DeploymentOption = None,
    rpc_url: RpcUrlOption = None,
    yes: YesOption = False,
    as_json: JsonOption = False,
) -> None:
    """Register the wallet as a node on the staking contract (once per wallet)."""
    _act(lambda op: op.plan_register(), wallet, passphrase_file, deployment, rpc_url, as_json, yes)


@app.command()
def stake(
    amount: str = typer.Argument(..., help="INFER to stake, e.g. 100 or 0.5."),
    allow_below_minimum: bool = typer.Option(
        False, "--allow-below-minimum", help="Stake even if the total stays below the routable minimum."
    ),
    wallet: WalletOption = None,
    passphrase_file: PassphraseFileOption = None,
    deployment: DeploymentOption = None,
    rpc_url: RpcUrlOption = None,
    yes: YesOption = False,
    as_json: JsonOption = False,
) -> None:
    """Approve and stake AMOUNT INFER (a node is routable once its stake reaches the minimum)."""
    from inferchain.cli.wallet import guarded
    from inferchain.wallet.operator import parse_amount

    wei = guarded(lambda: parse_amount(amount), as_json)
    _act(lambda op: op.plan_stake(wei, allow_below_minimum), wallet, passphrase_file, deployment, rpc_url, as_json, yes)


@app.command()
def unstake(
    amount: str | None = typer.Argument(None, help="INFER to unbond (default: all of the stake)."),
    wallet: WalletOption = None,
    passphrase_file: PassphraseFileOption = None,
    deployment: DeploymentOption = None,
    rpc_url: RpcUrlOption = None,
    yes: YesOption = False,
    as_json: JsonOption = False,
) -> None:
    """Start unbonding stake; `withdraw` pays it out after the unbonding delay."""
    from inferchain.cli.wallet import guarded
    from inferchain.wallet.operator import parse_amount

    wei = guarded(lambda: parse_amount(amount), as_json) if amount is not None else None
    _act(lambda op: op.plan_unstake(wei), wallet, passphrase_file, deployment, rpc_url, as_json, yes)


@app.command()
def withdraw(
    wallet: WalletOption = None,
    passphrase_file: PassphraseFileOption = None,
    deployment: DeploymentOption = None,
    rpc_url: RpcUrlOption = None,
    yes: YesOption = False,
    as_json: JsonOption = False,
) -> None:
    """Withdraw unbonded stake once the unbonding delay has passed."""
    _act(lambda op: op.plan_withdraw(), wallet, passphrase_file, deployment, rpc_url, as_json, yes)


@app.command()
def claim(
    wallet: WalletOption = None,
    passphrase_file: PassphraseFileOption = None,
    deployment: DeploymentOption = None,
    rpc_url: RpcUrlOption = None,
    yes: YesOption = False,
    as_json: JsonOption = False,
) -> None:
    """Claim settled earnings from the escrow and rewards of ended epochs from the reward pool."""
    _act(lambda op: op.plan_claim(), wallet, passphrase_file, deployment, rpc_url, as_json, yes)


@app.command()
def status(
    wallet: WalletOption = None,
    data_dir: Path | None = typer.Option(None, help="Node data folder (for the local receipt summary)."),
    deployment: DeploymentOption = None,
    rpc_url: RpcUrlOption = None,
    as_json: JsonOption = False,
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
            "receipts  "
            + "  ".join(f"{state} {n}" for state, n in sorted(summary["by_state"].items()))
            + f"  [dim](unsettled value {summary['unsettled_value_infer']} INFER)[/]"
        )


def _receipt_summary(folder: Path) -> dict:
    from inferchain.node.receipts import DB_FILE, ReceiptStore
    from inferchain.wallet.operator import fmt_token

    if not (folder / DB_FILE).exists():
        return {}
    store = ReceiptStore(folder)
    try:
        summary = store.summary()
    finally:
        store.close()
    unsettled = sum(int(v) for k, v in summary["value"].items() if k in ("signed", "countersigned"))
    return {**summary, "unsettled_value_infer": fmt_token(unsettled)}


@app.command()
def receipts(
    data_dir: Path | None = typer.Option(None, help="Node data folder (default: $INFERCHAIN_HOME/node)."),
    state: list[str] = typer.Option([], help="Only these states (repeat): signed, countersigned, settled, failed."),
    limit: int = typer.Option(0, min=0, help="At most this many (0: all)."),
    as_json: JsonOption = False,
) -> None:
    """List the receipts this node signed, with their settlement state (read from its local store)."""
    from rich.table import Table

    from inferchain.cli.wallet import emit
    from inferchain.cli.wallet import fail as fail_line
    from inferchain.node.receipts import DB_FILE, STATES, ReceiptStore
    from inferchain.wallet.operator import fmt_token

    folder = data_dir or data_home() / "node"
    bad = [s for s in state if s not in STATES]
    if bad:
        fail_line(f"unknown state {bad[0]!r}; choose from {', '.join(STATES)}", as_json)
    if not (folder / DB_FILE).exists():
        fail_line(f"no receipt store in {folder} (a paid node writes {DB_FILE} there)", as_json)
    store = ReceiptStore(folder)
    try:
        rows = store.list(state or None, limit or None)
        summary = store.summary()
    finally:
        store.close()
    if as_json:
        emit({"receipts": [r.to_json() for r in rows], "summary": summary})
        return
    table = Table(box=None, header_style="bold")
    for col in ("key", "state", "buyer", "layers", "tokens", "amount INFER", "settled in"):
        table.add_column(col)
    colours = {"signed": "yellow", "countersigned": "cyan", "settled": "green", "failed": "red"}
    for r in rows:
        rc = r.receipt
        where = r.settled_tx[:12] + "…" if r.settled_tx else (r.error or "")
        table.add_row(
            r.key[:12] + "…",
            f"[{colours[r.state]}]{r.state}[/]",
            rc.buyer[:10] + "…",
            f"{rc.span_start}:{rc.span_end}",
            str(rc.tokens_in + rc.tokens_out),
            fmt_token(rc.amount_owed),
            where,
        )
    console.print(table)
    console.print("  ".join(f"{k} {v}" for k, v in sorted(summary["by_state"].items())) or "no receipts")


SETTLE_CRASH_ENV = "INFERCHAIN_TEST_CRASH_AFTER_SETTLE_TX"  # tests: die after a batch is mined, before recording


@app.command()
def settle(
    wallet: WalletOption = None,
    data_dir: Path | None = typer.Option(None, help="Node data folder (default: $INFERCHAIN_HOME/node)."),
    batch_size: int = typer.Option(50, min=1, max=200, help="Receipts per settleBatch transaction."),
    passphrase_file: PassphraseFileOption = None,
    deployment: DeploymentOption = None,
    rpc_url: RpcUrlOption = None,
    as_json: JsonOption = False,
) -> None:
    """Submit countersigned, unsettled receipts to the escrow in batches (safe to re-run after a crash)."""
    from inferchain.cli.wallet import emit, guarded, open_chain, unlock
    from inferchain.cli.wallet import fail as fail_line
    from inferchain.node.receipts import DB_FILE, ReceiptStore
    from inferchain.wallet.operator import explain, fmt_token
    from inferchain.wallet.settlement import settle_receipts

    folder = data_dir or data_home() / "node"
    if not (folder / DB_FILE).exists():
        fail_line(f"no receipt store in {folder} (a paid node writes {DB_FILE} there)", as_json)
    account = unlock(wallet, passphrase_file, as_json)
    chain = open_chain(deployment, rpc_url, as_json)
    store = ReceiptStore(folder)
    domain = chain.deployment.receipt_domain
    here = (domain.chain_id, domain.verifying_contract.lower())
    todo = [
        r for r in store.list(["countersigned"]) if (r.domain.chain_id, r.domain.verifying_contract.lower()) == here
    ]
    if not as_json:
        total = sum(r.receipt.amount_owed for r in todo)
        console.print(f"[bold]→[/] settle {len(todo)} receipts worth {fmt_token(total)} INFER, {batch_size} per tx")

    def on_batch(keys: list[str], tx: str, block: int) -> None:
        if os.environ.get(SETTLE_CRASH_ENV):
            os._exit(3)  # simulated crash: the transaction is mined, the store does not know yet
        store.mark_settled(keys, tx, block)
        if not as_json:
            console.print(f"  [green]✓[/] settleBatch({len(keys)})  block {block}  [dim]{tx}[/]")

    report = guarded(
        lambda: settle_receipts(
            chain,
            account,
            [r.signed for r in todo],
            batch_size=batch_size,
            on_already=lambda keys: store.mark_settled(keys, None, None),
            on_refused=lambda key, why, permanent: store.mark_failed(key, why, permanent),
            on_batch=on_batch,
            explain=explain,
        ),
        as_json,
    )
    store.close()
    if as_json:
        emit(report.to_json())
        return
    if report.already:
        console.print(f"  {len(report.already)} were already settled on-chain (recorded now)")
    for key, (why, permanent) in report.refused.items():
        console.print(f"  [{'red' if permanent else 'yellow'}]✗[/] {key[:12]}…  {why}")
    console.print(f"settled {len(report.settled)}, already {len(report.already)}, refused {len(report.refused)}")
