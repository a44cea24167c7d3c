"""`inferchain validator start`: judge sampled sessions' evidence files and write signed verdicts.

Buyers drop `SessionEvidence` JSON files (`InferenceSession.evidence[i].to_json()`) into `--evidence-dir`. The
validator takes the ones its sampling rate selects, re-runs them through its span, and writes one JSON verdict per
guilty session into `--verdict-dir` (verdict, signature, signer). Submitting a quorum of them is
`inferchain.trust.validator.slash_by_quorum`. The loop is bounded: `--rounds` scans, `--every` seconds apart.
"""

from __future__ import annotations

import json
import time
from pathlib import Path

import typer

from inferchain.cli.output import emit_json, fail

app = typer.Typer(help="Validators: re-run sampled sessions and sign verdicts.", no_args_is_help=True)


@app.command("start")
def start(
    model: Path = typer.Option(..., help="prepared model folder"),
    layers: str = typer.Option(..., help="span this validator re-runs, e.g. 10:20"),
    evidence_dir: Path = typer.Option(..., help="folder of SessionEvidence JSON files"),
    verdict_dir: Path = typer.Option(..., help="folder guilty verdicts are written to"),
    sample_rate: float = typer.Option(0.1, min=0.0, max=1.0),
    rounds: int = typer.Option(1, min=1, help="scans of the evidence folder"),
    every: float = typer.Option(5.0, min=0.0, help="seconds between scans"),
    wallet: str | None = typer.Option(None, help="validator wallet (registered as validator on NodeStaking)"),
    passphrase_file: Path | None = typer.Option(None),
    deployment: Path | None = typer.Option(None),
    rpc_url: str | None = typer.Option(None),
    as_json: bool = typer.Option(False, "--json"),
) -> None:
    from inferchain.cli.wallet import open_chain, unlock
    from inferchain.models.span import SpanModel
    from inferchain.trust.validator import SessionEvidence, Validator

    try:
        start_layer, end_layer = (int(x) for x in layers.split(":"))
    except ValueError:
        fail(f"--layers must be START:END, got {layers!r}")
    account = unlock(wallet, passphrase_file, as_json)
    chain = open_chain(deployment, rpc_url, as_json)
    span = SpanModel(model, start_layer, end_layer)
    validator = Validator(account, chain.deployment.verdict_domain, chain.deployment.receipt_domain, sample_rate)
    verdict_dir.mkdir(parents=True, exist_ok=True)
    seen: set[str] = set()
    for n in range(rounds):
        for path in sorted(evidence_dir.glob("*.json"))[:10_000]:
            if path.name in seen:
                continue
            seen.add(path.name)
            evidence = SessionEvidence.from_json(json.loads(path.read_text()))
            if not validator.wants(evidence):
                continue
            check, verdict, signature = validator.judge(span, evidence)
            result = {"file": path.name, "outcome": check.outcome, "reason": check.reason}
            if verdict is not None and signature is not None:
                out = verdict_dir / f"{verdict.session_id.hex()}-{validator.address}.json"
                out.write_text(
                    json.dumps(
                        {
                            "node": verdict.node,
                            "session_id": "0x" + verdict.session_id.hex(),
                            "evidence_hash": "0x" + verdict.evidence_hash.hex(),
                            "deadline": verdict.deadline,
                            "signer": validator.address,
                            "signature": "0x" + signature.hex(),
                        }
                    )
                )
            if as_json:
                emit_json(result)
        if n + 1 < rounds:
            time.sleep(every)
    if as_json:
        emit_json({"checked": validator.checked, "guilty": validator.guilty})
