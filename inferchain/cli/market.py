"""`inferchain market start`: the market service (offer book, coverage, quotes) listening to the offer topics."""

from __future__ import annotations

import os
from pathlib import Path
from typing import Annotated, Any

import typer

from inferchain.cli.output import console, emit_json, fail

app = typer.Typer(
    help="Run the market service (offer book, coverage, route quotes, gateway) and the gateway's settlement.",
    no_args_is_help=True,
)


def _home() -> Path:
    return Path(os.environ.get("INFERCHAIN_HOME", Path.home() / ".inferchain"))


def _database_url(database: str | None) -> str:
    return database or f"sqlite:///{_home() / 'market' / 'market.sqlite'}"


DatabaseOption = Annotated[
    str | None,
    typer.Option("--database", help="SQLAlchemy URL (default: SQLite in $INFERCHAIN_HOME/market/market.sqlite)."),
]
PassphraseFileOption = Annotated[
    Path | None,
    typer.Option("--passphrase-file", help="The gateway wallet passphrase (first line); else $INFERCHAIN_PASSPHRASE."),
]


@app.command()
def start(
    host: str = typer.Option("127.0.0.1", help="HTTP address to listen on."),
    port: int = typer.Option(8000, min=0, max=65535, help="HTTP port."),
    database: DatabaseOption = None,
    bootstrap: list[str] = typer.Option([], help="A peer to join the network through (repeat)."),
    model: list[Path] = typer.Option(
        [], help="Prepared model folder whose offers to track (repeat; default: SmolLM2)."
    ),
    p2p_host: str = typer.Option("127.0.0.1", help="libp2p address to listen on."),
    p2p_port: int = typer.Option(0, min=0, max=65535, help="libp2p TCP port (0: any free port)."),
    free: bool = typer.Option(False, "--free", help="Also take unsigned announcements of free swarms (price 0)."),
    deployment: Path | None = typer.Option(None, "--deployment", help="Deployment to verify signed offers against."),
    rpc_url: str | None = typer.Option(None, "--rpc-url", help="JSON-RPC URL (default: the deployment's)."),
    standing_ttl: float = typer.Option(30.0, min=0.1, help="Seconds a wallet's chain standing is cached."),
    gateway: bool = typer.Option(True, "--gateway/--no-gateway", help="Serve the OpenAI-compatible API (/v1)."),
    gateway_domain: str = typer.Option("", help="Domain reseller sign-in messages must name (default: --host)."),
    reseller: list[str] = typer.Option([], help="Wallet allowed to sign in as a reseller (repeat; default: any)."),
    gateway_wallet: str | None = typer.Option(
        None, help="Paid gateway: the wallet whose key countersigns node receipts for resellers (each reseller "
        "authorises its address on the escrow) and sends the settlement transactions. Without it: free sessions.",
    ),
    passphrase_file: PassphraseFileOption = None,
    max_price_per_1k: str | None = typer.Option(
        None, help="Route price cap in INFER per 1k tokens (whole route) for requests that set none; in paid mode "
        "also what a request reserves and must find in the reseller's escrow (default: the book's quote).",
    ),
    settle_every: float = typer.Option(
        10.0, min=0, help="Paid gateway: run the settlement worker every S seconds (0: not in this process; run "
        "`inferchain market settle`).",
    ),
    settle_batch: int = typer.Option(50, min=1, max=200, help="Receipts per settleBatch transaction."),
    threads: int = typer.Option(
        1, min=0, help="Torch threads for the gateway's embeddings and LM head (0: torch's default). Requests already "
        "run in parallel, one thread each; more threads per request oversubscribe the cores under load.",
    ),
    json_output: bool = typer.Option(False, "--json", help="Print machine-readable lines."),
) -> None:
    """Subscribe to the offer topics of the given models, verify and persist offers, and serve the HTTP API."""
    import torch
    import uvicorn

    from inferchain.marketplace.book import OfferBook
    from inferchain.marketplace.db import SchemaVersionError, init_db, make_engine
    from inferchain.marketplace.listener import OfferListener
    from inferchain.marketplace.service import MarketState, create_app
    from inferchain.marketplace.verify import OfferVerifier, PenaltyWatch, StandingCache
    from inferchain.models.folder import ModelFolder, ModelFolderError
    from inferchain.models.prepare import default_model_dir
    from inferchain.p2p.host import PeerAddressError, load_or_create_identity
    from inferchain.wallet.deployment import DeploymentError, default_deployment_path

    if threads:
        torch.set_num_threads(threads)
    home = _home() / "market"
    models: dict[str, int] = {}
    names: dict[str, str] = {}
    for folder in model or [default_model_dir()]:
        try:
            manifest = ModelFolder(folder).manifest()
        except (ModelFolderError, OSError, KeyError, ValueError) as e:
            fail(f"--model {folder}: {e}")
        models[manifest.model_id], names[manifest.model_id] = manifest.num_layers, manifest.name

    domain = standings = chain = None
    chain_id = 31337  # the devnet's; the deployment's when there is one
    dep_path = deployment or default_deployment_path()
    if deployment is not None or dep_path.exists():
        from inferchain.wallet.chain import Chain

        try:
            chain = Chain.open(dep_path, rpc_url)
        except DeploymentError as e:
            if deployment is not None or not free:
                fail(f"cannot verify signed offers: {e}")
            chain = None
        if chain is not None:
            domain, standings = chain.deployment.verdict_domain, StandingCache(chain, ttl_s=standing_ttl)
            chain_id = chain.deployment.chain_id
    elif not free:
        fail(f"no deployment at {dep_path} to verify signed offers: pass --deployment, or --free for a free swarm")

    if gateway_wallet is not None and chain is None:
        fail("a paid gateway (--gateway-wallet) needs the deployment and its chain: pass --deployment")
    url = _database_url(database)
    try:
        engine = make_engine(url)
        book = OfferBook(init_db(engine), models, names=names)
    except SchemaVersionError as e:
        fail(str(e))
    except Exception as e:  # a bad URL or an unreachable server: one line, not a traceback
        fail(f"cannot open the market database {url.split('@')[-1]}: {e}")
    # Slashed/Jailed events drop a wallet's offers from the book at once (not after the standing cache's TTL).
    penalties = PenaltyWatch(chain).start() if chain is not None else None
    verifier = OfferVerifier(models, domain=domain, standings=standings, allow_unsigned=free, penalties=penalties)
    if penalties is not None:

        def drop_offers(wallet: str) -> None:
            for peer in verifier.peers_of(wallet):
                book.remove(peer)

        penalties.on_penalty(drop_offers)
    try:
        listener = OfferListener(
            book,
            verifier,
            key_pair=load_or_create_identity(home / "identity.key"),
            listen_host=p2p_host,
            port=p2p_port,
            bootstrap=bootstrap,
        ).start()
    except PeerAddressError as e:
        fail(str(e))
    gw = None
    worker_thread: tuple[Any, Any] | None = None
    if gateway:
        from eth_utils import is_address, to_checksum_address

        from inferchain.marketplace.gateway.db import GatewaySchemaError, init_gateway_db
        from inferchain.marketplace.gateway.mount import book_peers
        from inferchain.marketplace.gateway.runner import Runners
        from inferchain.marketplace.gateway.state import Gateway

        bad = [r for r in reseller if not is_address(r)]
        if bad:
            fail(f"--reseller {bad[0]}: not an address")
        try:
            gw_sessions = init_gateway_db(engine)
        except GatewaySchemaError as e:
            fail(str(e))
        paid, cap = None, _price_option(max_price_per_1k)
        if gateway_wallet is not None:
            from inferchain.cli.wallet import unlock
            from inferchain.marketplace.gateway.paid import PaidMode

            assert chain is not None
            paid = PaidMode(chain, unlock(gateway_wallet, passphrase_file, json_output))
        gw = Gateway(
            gw_sessions,
            Runners(model or [default_model_dir()], book_peers(book)),
            book=book,
            domain=gateway_domain or host,
            chain_id=chain_id,
            resellers=frozenset(to_checksum_address(r) for r in reseller) if reseller else None,
            max_price_per_1k=cap,
            paid=paid,
        )
        if paid is not None and settle_every > 0:
            worker = _worker(gw_sessions, paid.chain, paid.signer, settle_batch)
            worker_thread = worker.start_thread(settle_every)
    app_ = create_app(MarketState(book, verifier, listener), gw)
    info = {
        "event": "ready",
        "http": f"http://{host}:{port}",
        "peer_id": listener.peer_id,
        "addrs": listener.addrs,
        "models": models,
        "paid": domain is not None,
        "free": free,
        "gateway": gw is not None,
        "gateway_key": gw.paid.signer_address if gw is not None and gw.paid is not None else None,
        "settlement_worker": worker_thread is not None,
    }
    if json_output:
        emit_json(info)
    else:
        console.print(f"[green]market[/] on http://{host}:{port} (docs at /docs), peer {listener.peer_id}")
        for mid, layers in models.items():
            console.print(f"  tracking {names[mid]} ({layers} layers) {mid}")
        if gw is not None and gw.paid is not None:
            console.print(f"  paid gateway: resellers authorise {gw.paid.signer_address} on the escrow; settlement "
                          + (f"every {settle_every:g} s" if worker_thread else "by `inferchain market settle`"))
    try:
        uvicorn.run(app_, host=host, port=port, log_level="warning")
    finally:
        if worker_thread is not None:
            worker_thread[1].set()
            worker_thread[0].join(timeout=30)
        listener.close()
        if penalties is not None:
            penalties.close()
        if gw is not None:
            gw.runners.close()
        engine.dispose()


def _price_option(text: str | None) -> int | None:
    if text is None:
        return None
    from inferchain.wallet.operator import parse_amount

    try:
        return parse_amount(text)
    except Exception as e:
        fail(f"--max-price-per-1k {text}: {e}")


def _worker(sessions: Any, chain: Any, sender: Any, batch_size: int, max_attempts: int = 8) -> Any:
    from inferchain.marketplace.gateway.settlement import SettlementWorker
    from inferchain.wallet.operator import explain

    return SettlementWorker(sessions, chain, sender, batch_size=batch_size, max_attempts=max_attempts, explain=explain)


@app.command()
def settle(
    database: DatabaseOption = None,
    wallet: str | None = typer.Option(
        None, help="Wallet that sends the settleBatch transactions and pays their gas (e.g. the gateway wallet)."
    ),
    passphrase_file: PassphraseFileOption = None,
    deployment: Path | None = typer.Option(None, "--deployment", help="Deployment (default: the devnet's)."),
    rpc_url: str | None = typer.Option(None, "--rpc-url", help="JSON-RPC URL (default: the deployment's)."),
    batch_size: int = typer.Option(50, min=1, max=200, help="Receipts per settleBatch transaction."),
    every: float = typer.Option(0.0, min=0, help="Keep running, a pass every S seconds (0: one pass, then exit)."),
    max_attempts: int = typer.Option(8, min=1, help="Passing failures before a receipt is flagged."),
    json_output: bool = typer.Option(False, "--json", help="Print one JSON line per pass."),
) -> None:
    """Settle the node receipts of paid gateway requests on the escrow: batches, retries with backoff, safe to
    kill and re-run (a batch is recorded signed before it is sent, and resolved on-chain before anything else)."""
    import threading

    from sqlalchemy.exc import SQLAlchemyError

    from inferchain.cli.wallet import guarded, open_chain, unlock
    from inferchain.marketplace.db import make_engine
    from inferchain.marketplace.gateway.db import GatewaySchemaError, init_gateway_db

    url = _database_url(database)
    try:
        engine = make_engine(url)
        sessions = init_gateway_db(engine)
    except (GatewaySchemaError, SQLAlchemyError) as e:
        fail(f"cannot open the gateway database {url.split('@')[-1]}: {e}")
    account = unlock(wallet, passphrase_file, json_output)
    chain = open_chain(deployment, rpc_url, json_output)
    worker = _worker(sessions, chain, account, batch_size, max_attempts)

    def one_pass() -> None:
        report = guarded(worker.run_once, json_output)
        if json_output:
            emit_json({**report.to_json(), "receipts": worker.summary()})
            return
        for tx, state in report.resumed.items():
            console.print(f"  resumed batch {tx[:12]}…: {state}")
        for tx in report.txs:
            console.print(f"  [green]✓[/] settleBatch  [dim]{tx}[/]")
        for key, why in report.flagged.items():
            console.print(f"  [red]✗[/] {key[:12]}… flagged: {why}")
        for key, why in report.retry.items():
            console.print(f"  [yellow]…[/] {key[:12]}… retry later: {why}")
        console.print(
            f"settled {len(report.settled)}, already {len(report.already)}, retry {len(report.retry)}, "
            f"flagged {len(report.flagged)}; receipts by state: {worker.summary()['by_state']}"
        )

    try:
        one_pass()
        stop = threading.Event()
        while every > 0 and not stop.wait(every):
            one_pass()
    except KeyboardInterrupt:
        pass
    finally:
        engine.dispose()
