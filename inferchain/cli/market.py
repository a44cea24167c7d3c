"""`inferchain market start`: the market service (offer book, coverage, quotes) listening to the offer topics."""

from __future__ import annotations

import os
from pathlib import Path

import typer

from inferchain.cli.output import console, emit_json, fail

app = typer.Typer(help="Run the market service (offer book, coverage, route quotes).", no_args_is_help=True)


def _home() -> Path:
    return Path(os.environ.get("INFERCHAIN_HOME", Path.home() / ".inferchain"))


@app.command()
def start(
    host: str = typer.Option("127.0.0.1", help="HTTP address to listen on."),
    port: int = typer.Option(8000, min=0, max=65535, help="HTTP port."),
    database: str | None = typer.Option(
        None, "--database", help="SQLAlchemy URL (default: SQLite in $INFERCHAIN_HOME/market/market.sqlite)."
    ),
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
    json_output: bool = typer.Option(False, "--json", help="Print machine-readable lines."),
) -> None:
    """Subscribe to the offer topics of the given models, verify and persist offers, and serve the HTTP API."""
    import uvicorn

    from inferchain.marketplace.book import OfferBook
    from inferchain.marketplace.db import SchemaVersionError, init_db, make_engine
    from inferchain.marketplace.listener import OfferListener
    from inferchain.marketplace.service import MarketState, create_app
    from inferchain.marketplace.verify import OfferVerifier, StandingCache
    from inferchain.models.folder import ModelFolder, ModelFolderError
    from inferchain.models.prepare import default_model_dir
    from inferchain.p2p.host import PeerAddressError, load_or_create_identity
    from inferchain.wallet.deployment import DeploymentError, default_deployment_path

    home = _home() / "market"
    models: dict[str, int] = {}
    names: dict[str, str] = {}
    for folder in model or [default_model_dir()]:
        try:
            manifest = ModelFolder(folder).manifest()
        except (ModelFolderError, OSError, KeyError, ValueError) as e:
            fail(f"--model {folder}: {e}")
        models[manifest.model_id], names[manifest.model_id] = manifest.num_layers, manifest.name

    domain = standings = None
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

    url = database or f"sqlite:///{home / 'market.sqlite'}"
    try:
        engine = make_engine(url)
        book = OfferBook(init_db(engine), models, names=names)
    except SchemaVersionError as e:
        fail(str(e))
    except Exception as e:  # a bad URL or an unreachable server: one line, not a traceback
        fail(f"cannot open the market database {url.split('@')[-1]}: {e}")
    verifier = OfferVerifier(models, domain=domain, standings=standings, allow_unsigned=free)
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
        gw = Gateway(
            gw_sessions,
            Runners(model or [default_model_dir()], book_peers(book)),
            book=book,
            domain=gateway_domain or host,
            chain_id=chain_id,
            resellers=frozenset(to_checksum_address(r) for r in reseller) if reseller else None,
        )
    app_ = create_app(MarketState(book, verifier, listener), gw)
    info = {
        "event": "ready",
        "http": f"http://{host}:{port}",
        "peer_id": listener.peer_id,
        "addrs": listener.addrs,
        "models": models,
        "paid": domain is not None,
        "free": free,
    }
    if json_output:
        emit_json(info)
    else:
        console.print(f"[green]market[/] on http://{host}:{port} (docs at /docs), peer {listener.peer_id}")
        for mid, layers in models.items():
            console.print(f"  tracking {names[mid]} ({layers} layers) {mid}")
    try:
        uvicorn.run(app_, host=host, port=port, log_level="warning")
    finally:
        listener.close()
        if gw is not None:
            gw.runners.close()
        engine.dispose()
