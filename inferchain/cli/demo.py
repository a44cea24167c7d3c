"""`inferchain demo`: the whole paid market on one machine, and `inferchain demo down`.

A devnet chain with the contracts, four operators (wallets, registration, stake, each node process with its own
data folder, overlapping spans), the market (offer book, paid gateway with its settlement worker, web UI), a
buyer with an escrow deposit and a paid chat over the planner's route, a reseller whose customer chats through
the OpenAI-compatible API with an API key, every receipt settled on-chain, the epoch's end (the devnet's clock
moves on) and every operator's claim of its earnings and epoch rewards, and a summary. Everything it starts is
recorded by PID in the demo folder and stopped at the end (or by `inferchain demo down`); a second run starts
from a clean folder.
"""

from __future__ import annotations

import json
import os
import shutil
import signal
import subprocess
import sys
import time
from collections.abc import Sequence
from pathlib import Path
from typing import Any

import typer

from inferchain.cli.output import console, emit_json, fail

app = typer.Typer(help="Run the whole paid market locally.", invoke_without_command=True)

PASSPHRASE = "inferchain demo"  # devnet wallets only: the keys are Hardhat's public development keys
# Overlapping spans, so the planner cuts them; the fourth operator is a dearer stand-in for the middle layers.
SPANS = [(0, 12), (10, 22), (20, 30), (8, 24)]
PRICES = ["0.002", "0.001", "0.003", "0.004"]  # INFER per 1k tokens per layer
BUYER = len(SPANS) + 1  # devnet account index of the buyer (0 deploys, 1..4 operate)
RESELLER, GATEWAY = BUYER + 1, BUYER + 2  # a reseller with escrow, and the market's gateway key it authorises
PIDS = "pids.json"


def demo_home() -> Path:
    return Path(os.environ.get("INFERCHAIN_HOME", Path.home() / ".inferchain")) / "demo"


def _record_pids(home: Path, pids: list[int]) -> None:
    (home / PIDS).write_text(json.dumps(pids))


def stop_recorded(home: Path) -> int:
    """Stop every process a demo in `home` recorded, and its devnet. Returns how many were running."""
    from inferchain.wallet import devnet

    stopped = 0
    try:
        pids = json.loads((home / PIDS).read_text())
    except (FileNotFoundError, ValueError):
        pids = []
    for pid in pids:
        try:
            os.kill(pid, signal.SIGKILL)
            stopped += 1
        except ProcessLookupError:
            pass
    (home / PIDS).unlink(missing_ok=True)
    if (home / "chain").exists() and devnet.down(home / "chain"):
        stopped += 1
    return stopped


@app.callback()
def demo(
    ctx: typer.Context,
    prompt: str = typer.Option("What is the capital of France? Answer in one sentence.", help="The paid chat."),
    max_tokens: int = typer.Option(48, min=1),
    kill_a_node: bool = typer.Option(False, help="Kill one node mid-answer to show fail-over."),
    keep: bool = typer.Option(False, help="Leave the chain and nodes running (stop them with `demo down`)."),
    model: Path | None = typer.Option(None, help="Prepared model folder (default: the bundled SmolLM2)."),
    json_output: bool = typer.Option(False, "--json", help="Print the summary as JSON."),
) -> None:
    """Start a local paid market, answer one paid chat through it, settle, and print what everyone earned."""
    if ctx.invoked_subcommand is not None:
        return
    try:
        summary = run_demo(prompt, max_tokens, kill_a_node, keep, quiet=json_output, model=model)
    except KeyboardInterrupt:
        stop_recorded(demo_home())
        fail("interrupted; everything the demo started is stopped")
    if json_output:
        emit_json(summary)


@app.command()
def down() -> None:
    """Stop everything a previous `inferchain demo --keep` left running."""
    n = stop_recorded(demo_home())
    console.print(f"stopped {n} process(es)" if n else "nothing was running")


def run_demo(
    prompt: str, max_tokens: int, kill_a_node: bool, keep: bool, quiet: bool = False, model: Path | None = None
) -> dict[str, Any]:
    from transformers import AutoTokenizer

    from inferchain.cli.demo_market import DemoMarketError, customer_chat, start_market, wait_for_offers
    from inferchain.client.chain import RouteLimits
    from inferchain.client.generation import SamplingParams, chat_prompt, stream_tokens
    from inferchain.client.session import InferenceSession
    from inferchain.models.prepare import default_model_dir, prepare_default_model
    from inferchain.node.launch import NodeStartError, start_node
    from inferchain.wallet import devnet
    from inferchain.wallet.buyer import Buyer
    from inferchain.wallet.chain import Chain
    from inferchain.wallet.deployment import ONE_TOKEN
    from inferchain.wallet.keystore import Keystore
    from inferchain.wallet.operator import Operator, fmt_token

    say = (lambda _m: None) if quiet else (lambda m: console.print(f"[dim]•[/] {m}"))
    home = demo_home()
    stop_recorded(home)  # a previous run that was killed hard
    shutil.rmtree(home, ignore_errors=True)
    home.mkdir(parents=True)
    folder = model or default_model_dir()
    if model is None:
        say("preparing the model (once)")
        prepare_default_model(folder)
    chain_dir = home / "chain"
    say("starting the devnet chain and deploying the contracts")
    devnet.up(chain_dir, accounts=GATEWAY + 1, fund=10_000 * ONE_TOKEN, progress=say)
    pids: list[int] = []  # node processes; the devnet is stopped through its own PID file
    nodes = []
    try:
        chain = Chain.open(chain_dir / "deployment.json")
        keys = devnet.devnet_accounts(GATEWAY + 1)
        env = {
            "INFERCHAIN_HOME": str(chain_dir),  # deployment.json and the wallets live here
            "INFERCHAIN_PASSPHRASE": PASSPHRASE,
            "INFERCHAIN_SCRYPT_N": "4096",
        }
        os.environ.update(env)
        store = Keystore(chain_dir / "wallets")
        gas: dict[str, int] = {}
        operators = []
        accounts: dict[str, Operator] = {}  # operator name -> its unlocked wallet on the chain
        for i, (span, price) in enumerate(zip(SPANS, PRICES, strict=True), start=1):
            name = f"operator{i}"
            store.import_private_key(name, keys[i]["private_key"], PASSPHRASE)
            op = Operator(chain, store.unlock(name, PASSPHRASE))
            for make_plan in (op.plan_register, lambda op=op: op.plan_stake(150 * ONE_TOKEN)):
                plan = make_plan()  # each plan checks the chain state its predecessor left
                outcome = plan.run()
                gas[plan.action] = gas.get(plan.action, 0) + sum(t["gas"] for t in outcome.txs)
            operators.append((name, op.address, span, price))
            accounts[name] = op
            say(f"{name} {op.address} registered and staked 150 INFER; serves layers {span[0]}:{span[1]} at {price}")
        for name, _addr, span, price in operators:
            args = ["--wallet", name, "--price", price]
            node = start_node(span, home / name, folder, args, env=env, sharing=len(SPANS))
            nodes.append(node)
            pids.append(node.process.pid)
            _record_pids(home, pids)
        for node in nodes:
            node.wait_ready(180)
        say(f"{len(nodes)} paid node processes are serving")
        store.import_private_key("gateway", keys[GATEWAY]["private_key"], PASSPHRASE)
        market = start_market(home, chain_dir / "deployment.json", [n.addr for n in nodes], folder, "gateway", env)
        pids.append(market.process.pid)
        _record_pids(home, pids)
        wait_for_offers(market, len(nodes))
        say(f"the market verified {len(nodes)} signed offers; gateway and web UI at {market.url}")

        buyer_key = Account_from(keys[BUYER]["private_key"])
        chain.deposit(buyer_key, 100 * ONE_TOKEN)
        buyer = Buyer(buyer_key, chain.deployment.receipt_domain, max_price_per_1k=ONE_TOKEN // 100)
        say(f"buyer {buyer_key.address} deposited 100 INFER into escrow")

        tokenizer = AutoTokenizer.from_pretrained(str(folder))
        ids = chat_prompt(tokenizer, [{"role": "user", "content": prompt}])
        started = time.monotonic()
        limits = RouteLimits(objective="price")  # the cheapest cover: the buyer pays per layer served
        with InferenceSession(
            folder, [n.addr for n in nodes], buyer=buyer, max_length=len(ids) + max_tokens, limits=limits
        ) as s:
            routed_s = time.monotonic() - started  # nodes asked, route planned, paid sessions opened
            route = list(s.route)
            if not quiet:
                console.print("route: " + " -> ".join(f"{_owner(p, nodes, operators)}[{a}:{b}]" for p, a, b in route))
                console.print(f"[bold]> {prompt}[/]")
            pieces, token_times = [], []
            for i, chunk in enumerate(stream_tokens(s, tokenizer, ids, SamplingParams(max_tokens=max_tokens))):
                pieces.append(chunk.text)
                if chunk.token_id >= 0:
                    token_times.append(time.monotonic())
                if not quiet:
                    sys.stdout.write(chunk.text)
                    sys.stdout.flush()
                if kill_a_node and i == 4:  # the middle hop: the stand-in can take over its layers
                    victim = next(n for n in nodes if n.peer_id == s.route[len(s.route) // 2][0])
                    victim.kill()
            if not quiet:
                sys.stdout.write("\n")
            failovers = [f.__dict__ for f in s.failovers]
        receipts = s.receipts
        chat_s = time.monotonic() - started
        say(f"{len(receipts)} receipts signed by the nodes and countersigned by the buyer")

        reseller = Account_from(keys[RESELLER]["private_key"])
        chain.deposit(reseller, 100 * ONE_TOKEN)
        chain.authorize_signer(reseller, Account_from(keys[GATEWAY]["private_key"]).address)
        say(f"reseller {reseller.address} deposited 100 INFER and authorised the gateway's key")
        escrow_before = chain.escrow_balance(reseller.address)
        gateway_chat = customer_chat(market, reseller, prompt, max_tokens)
        gateway_chat["reseller_paid_infer"] = fmt_token(escrow_before - chain.escrow_balance(reseller.address))
        say(
            f"the reseller's customer chatted through the OpenAI-compatible API; the gateway settled "
            f"{len(gateway_chat['receipts'])} receipts from the reseller's escrow"
        )

        settled_gas, settle_started = 0, time.monotonic()
        for (name, *_), node in zip(operators, nodes, strict=True):
            proc = subprocess.run(
                [
                    sys.executable,
                    "-m",
                    "inferchain.cli",
                    "node",
                    "settle",
                    "--wallet",
                    name,
                    "--data-dir",
                    str(node.data_dir),
                    "--json",
                ],
                env={**os.environ, **env},
                capture_output=True,
                text=True,
                timeout=180,
            )
            if proc.returncode != 0:
                raise RuntimeError(f"settling {name}'s receipts failed: {proc.stderr.strip() or proc.stdout.strip()}")
            report = json.loads(proc.stdout.strip().splitlines()[-1])
            settled_gas += sum(int(t.get("gas", 0)) for t in report.get("txs", []))
        gas["settle"] = settled_gas
        settle_s = time.monotonic() - settle_started
        earned = {name: chain.earnings(addr) for name, addr, *_ in operators}
        claims = claim_everything(chain, accounts, gas)
        say(
            "the epoch ended (the devnet's clock moved on); the operators claimed their earnings and epoch rewards: "
            + ", ".join(f"{name} {fmt_token(int(c['received']))} INFER" for name, c in claims.items())
        )
        rows = []
        for name, addr, span, price in operators:
            claim = claims.get(name, {})
            rows.append(
                {
                    "operator": name,
                    "address": addr,
                    "span": list(span),
                    "price_per_1k_per_layer": price,
                    "earned_infer": fmt_token(earned[name]),
                    "earned_wei": str(earned[name]),
                    "reward_wei": claim.get("rewards", "0"),
                    "claimed_wei": claim.get("received", "0"),
                    "claimed_infer": fmt_token(int(claim.get("received", "0"))),
                    "receipts": sum(1 for r in receipts if r.receipt.node == addr),
                    "gateway_layers": [rc["span"] for rc in gateway_chat["receipts"] if rc["node"] == addr],
                    "gateway_receipts": sum(1 for rc in gateway_chat["receipts"] if rc["node"] == addr),
                }
            )
        summary = {
            "prompt": prompt,
            "answer": "".join(pieces),
            "route": [{"operator": _owner(p, nodes, operators), "layers": [a, b]} for p, a, b in route],
            "failovers": failovers,
            "prompt_tokens": len(ids),
            "completion_tokens": len(token_times),
            "paid_infer": fmt_token(sum(r.receipt.amount_owed for r in receipts)),
            "buyer_escrow_left_infer": fmt_token(chain.escrow_balance(buyer_key.address)),
            "nodes": rows,
            "gas": gas,
            "chat_seconds": round(chat_s, 2),
            "route_and_open_seconds": round(routed_s, 3),
            "first_token_seconds": round(token_times[0] - started, 3) if token_times else None,
            "decode_tokens_per_s": round((len(token_times) - 1) / (token_times[-1] - token_times[0]), 2)
            if len(token_times) > 1
            else None,
            "settle_seconds": round(settle_s, 2),
            "chain_rpc": chain.deployment.rpc_url,
            "gateway_chat": gateway_chat,
            "web_ui": market.url + "/app",
        }
        if not quiet:
            _print_summary(summary)
        return summary
    except (NodeStartError, DemoMarketError) as e:
        fail(str(e))
    finally:
        if keep:
            _record_pids(home, pids)
            if not quiet:
                console.print(f"[dim]left running; stop with `inferchain demo down` (PIDs in {home / PIDS})[/]")
        else:
            stop_recorded(home)


def claim_everything(chain: Any, accounts: dict[str, Any], gas: dict[str, int]) -> dict[str, dict[str, str]]:
    """End the current reward epoch on the devnet (its clock moves on by one epoch) and let every operator with
    something to claim take its settled escrow earnings and its share of the epoch's rewards. Returns, per operator,
    the claim's details (earnings, rewards, received: token wei as decimal text); adds the gas to `gas["claim"]`."""
    from inferchain.wallet import devnet
    from inferchain.wallet.operator import OperatorError

    devnet.rpc_request(chain.deployment.rpc_url, "evm_increaseTime", [chain.deployment.params.epoch_length_s])
    devnet.rpc_request(chain.deployment.rpc_url, "evm_mine")
    claims = {}
    for name, op in accounts.items():
        try:
            plan = op.plan_claim()
        except OperatorError:  # served nothing: nothing to claim
            continue
        outcome = plan.run()
        gas["claim"] = gas.get("claim", 0) + sum(t["gas"] for t in outcome.txs)
        claims[name] = {k: str(v) for k, v in outcome.details.items()}
    return claims


def Account_from(key: str) -> Any:  # noqa: N802 - reads as the eth-account constructor it wraps
    from eth_account import Account

    return Account.from_key(key)


def _owner(peer_id: str, nodes: list[Any], operators: Sequence[tuple[str, str, tuple[int, int], str]]) -> str:
    for node, (name, *_rest) in zip(nodes, operators, strict=True):
        if node.peer_id == peer_id:
            return name
    return peer_id[-6:]


def _print_summary(summary: dict[str, Any]) -> None:
    from rich.table import Table

    def infer(wei: str) -> str:  # six decimals for the table; the JSON summary keeps every wei
        return f"{int(wei) / 10**18:.6f}"

    table = Table(title="two paid chats: who served which layers, and what they earned (INFER)")
    for col in ("operator", "price", "buyer", "customer", "receipts", "earned", "claimed"):
        table.add_column(col, no_wrap=True)
    served = {r["operator"]: f"{r['layers'][0]}:{r['layers'][1]}" for r in summary["route"]}
    for r in summary["nodes"]:
        table.add_row(
            r["operator"],
            r["price_per_1k_per_layer"],
            served.get(r["operator"], "-"),
            ", ".join(f"{a}:{b}" for a, b in r["gateway_layers"]) or "-",
            str(r["receipts"] + r["gateway_receipts"]),
            infer(r["earned_wei"]),
            infer(r["claimed_wei"]),
        )
    console.print(table)
    console.print(
        "price: INFER per 1k tokens per layer; buyer / customer: the layers each chat had the node serve (the "
        "customer's through the gateway); claimed: earnings plus the node's share of the epoch's fees"
    )
    console.print(
        f"buyer's chat: {summary['prompt_tokens']} prompt + {summary['completion_tokens']} completion tokens over "
        + " -> ".join(f"{h['operator']}[{h['layers'][0]}:{h['layers'][1]}]" for h in summary["route"])
        + f"; paid {summary['paid_infer']} INFER, escrow left {summary['buyer_escrow_left_infer']} INFER"
    )
    console.print("gas used: " + ", ".join(f"{k} {v:,}" for k, v in summary["gas"].items()))
    for f in summary["failovers"]:
        console.print(f"[yellow]fail-over[/]: layers {f['layers']} moved after: {f['reason']}")
    g = summary["gateway_chat"]
    console.print(
        f"reseller's customer (API key, OpenAI-compatible API): {g['usage']['completion_tokens']} tokens, "
        f"{len(g['receipts'])} receipts settled by the gateway; the reseller paid {g['reseller_paid_infer']} INFER"
    )
    console.print(f"web UI: [bold]{summary['web_ui']}[/]")
