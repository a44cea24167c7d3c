"""`inferchain validator start` / `status`: judge sampled sessions' evidence, share verdicts, slash on-chain.

Buyers drop `SessionEvidence` JSON files (`InferenceSession.evidence[i].to_json()`) into `--evidence-dir`. The
validator records each one in its SQLite evidence store (`--data-dir`), reports equivocations (two different
receipts of one node for one session and span) to NodeStaking at once, re-runs the sessions its sampling rate
selects through its span, writes a signed verdict per guilty session into the shared `--verdict-dir`, and submits
`slashByVerdicts` as soon as a quorum of validators signed the same verdict. Every check, verdict, submission and
tx hash is in the store (`inferchain validator status`). The loop is bounded: `--rounds` scans, `--every` seconds
apart.
"""

from __future__ import annotations

import time
from pathlib import Path
from typing import Any

import typer

from inferchain.cli.output import console, emit_json, fail

app = typer.Typer(help="Validators: re-run sampled sessions, sign verdicts, slash cheaters.", no_args_is_help=True)


def _default_data_dir() -> Path:
    from inferchain.wallet.deployment import default_home

    return default_home() / "validator"


@app.command("start")
def start(
    model: Path = typer.Option(..., help="prepared model folder"),
    layers: str = typer.Option(..., help="span this validator re-runs, e.g. 10:20"),
    evidence_dir: Path = typer.Option(..., help="folder of SessionEvidence JSON files"),
    verdict_dir: Path = typer.Option(..., help="folder shared by the validators: signed guilty verdicts"),
    data_dir: Path | None = typer.Option(None, help="evidence store folder (default: <home>/validator)"),
    sample_rate: float = typer.Option(0.1, min=0.0, max=1.0),
    price: str = typer.Option("0", help="INFER per 1k tokens per layer billed by validation receipts"),
    rounds: int = typer.Option(1, min=1, help="scans of the evidence folder"),
    every: float = typer.Option(5.0, min=0.0, help="seconds between scans"),
    submit: bool = typer.Option(True, help="submit equivocations and verdict quorums to NodeStaking"),
    wallet: str | None = typer.Option(None, help="validator wallet (in NodeStaking's validator set)"),
    passphrase_file: Path | None = typer.Option(None),
    deployment: Path | None = typer.Option(None),
    rpc_url: str | None = typer.Option(None),
    as_json: bool = typer.Option(False, "--json"),
) -> None:
    """Scan the evidence folder `--rounds` times: check, sign, share, slash; progress per file and per scan."""
    from inferchain.cli.wallet import open_chain, unlock
    from inferchain.models.span import SpanModel
    from inferchain.trust.evidence import EvidenceStore
    from inferchain.trust.validator import Validator
    from inferchain.trust.worker import ValidatorWorker
    from inferchain.wallet.operator import parse_amount

    try:
        start_layer, end_layer = (int(x) for x in layers.split(":"))
    except ValueError:
        fail(f"--layers must be START:END, got {layers!r}")
    account = unlock(wallet, passphrase_file, as_json)
    chain = open_chain(deployment, rpc_url, as_json)
    if submit and not chain.contracts.staking.functions.isValidator(account.address).call():
        fail(f"{account.address} is not in NodeStaking's validator set (the owner adds it with addValidator)")
    span = SpanModel(model, start_layer, end_layer)
    validator = Validator(account, chain.deployment.verdict_domain, chain.deployment.receipt_domain, sample_rate)
    store = EvidenceStore(data_dir or _default_data_dir())

    def progress(event: dict[str, Any]) -> None:
        if as_json:
            emit_json(event)
        else:
            what = event.get("file") or event.get("tx", "")
            console.print(f"[dim]•[/] {event.get('outcome')}: {what} {event.get('reason', '')}".rstrip())

    worker = ValidatorWorker(
        validator,
        span,
        store,
        evidence_dir,
        verdict_dir,
        chain=chain if submit else None,
        price_per_1k=0 if float(price) == 0 else parse_amount(price),
        progress=progress,
    )
    try:
        for n in range(rounds):
            report = worker.scan()
            line = {"scan": n + 1, "of": rounds, **report.to_json(), "store": store.summary()}
            if as_json:
                emit_json(line)
            else:
                s = line["store"]
                console.print(
                    f"scan {n + 1}/{rounds}: {report.new_files} new, {report.sampled} checked "
                    f"{dict(report.outcomes)}, {report.verdicts_signed} verdicts signed, "
                    f"{len(report.slashes)} slashes sent | total seen {s['seen']}, checks {s['checks']}"
                )
            if n + 1 < rounds:
                time.sleep(every)
    finally:
        store.close()


@app.command("status")
def status(
    data_dir: Path | None = typer.Option(None, help="evidence store folder (default: <home>/validator)"),
    as_json: bool = typer.Option(False, "--json"),
) -> None:
    """What the validator checked, signed and submitted (from its evidence store)."""
    from inferchain.trust.evidence import DB_FILE, EvidenceStore

    folder = data_dir or _default_data_dir()
    if not (folder / DB_FILE).exists():
        fail(f"no evidence store in {folder}")
    store = EvidenceStore(folder)
    try:
        data: dict[str, Any] = {
            "summary": store.summary(),
            "submissions": store.submissions(),
            "checks": store.checks()[-20:],
        }
    finally:
        store.close()
    if as_json:
        emit_json(data)
        return
    console.print(data["summary"])
    for s in data["submissions"]:
        console.print(f"{s['kind']} {s['status']} node {s['node']} session {s['session_id'][:10]}… tx {s['tx_hash']}")
