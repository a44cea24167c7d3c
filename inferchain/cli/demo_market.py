"""The demo's market half: `inferchain market start` (offer book, paid gateway, settlement worker, web UI) as a
process, and a reseller whose Web2 customer chats through the OpenAI-compatible API with an API key.

The reseller deposits into escrow and authorises the gateway's key on-chain; it signs in to the admin API with
its wallet (EIP-4361) and creates the customer's key; the customer streams a chat completion; the gateway's
settlement worker settles the nodes' receipts from the reseller's escrow.
"""

from __future__ import annotations

import json
import os
import subprocess
import sys
import time
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import httpx

#: the name `inferchain market start --gateway-domain` is given, which sign-in messages must name
DOMAIN = "demo.inferchain.local"


class DemoMarketError(RuntimeError):
    """The market process or the gateway chat failed; the text says why (with the market's log tail)."""


@dataclass
class Market:
    process: subprocess.Popen[bytes]
    url: str
    log: Path

    def tail(self, n: int = 3000) -> str:
        try:
            return self.log.read_text(errors="replace")[-n:]
        except OSError:
            return ""

    def check_alive(self) -> None:
        if self.process.poll() is not None:
            raise DemoMarketError(f"the market process exited ({self.process.returncode}):\n{self.tail()}")


def start_market(
    home: Path, deployment: Path, bootstrap: list[str], model: Path, gateway_wallet: str, env: dict[str, str]
) -> Market:
    """Start `inferchain market start` in paid-gateway mode on a free port; returns once it listens."""
    from inferchain.wallet.devnet import free_port

    port = free_port()
    log = home / "market.log"
    cmd = [
        sys.executable, "-m", "inferchain.cli", "market", "start", "--port", str(port), "--json",
        "--database", f"sqlite:///{home / 'market.sqlite'}", "--deployment", str(deployment),
        *(arg for addr in bootstrap for arg in ("--bootstrap", addr)), "--model", str(model),
        "--gateway-domain", DOMAIN, "--gateway-wallet", gateway_wallet, "--max-price-per-1k", "1",
        "--settle-every", "1",
    ]  # fmt: skip
    with open(log, "wb") as out:
        process = subprocess.Popen(cmd, stdout=out, stderr=subprocess.STDOUT, env={**os.environ, **env})
    return Market(process, f"http://127.0.0.1:{port}", log)


def wait_for_offers(market: Market, count: int, timeout_s: float = 120) -> None:
    """Until the market's verified book holds `count` live offers (the nodes announce every few seconds)."""
    deadline = time.monotonic() + timeout_s
    health: dict = {}
    with httpx.Client(base_url=market.url, timeout=10) as http:
        while True:
            market.check_alive()
            try:
                health = http.get("/health").json()
                if health.get("live_offers", 0) >= count:
                    return
            except (httpx.TransportError, ValueError):
                pass
            if time.monotonic() > deadline:
                heard = f"the market heard fewer than {count} offers in {timeout_s:.0f} s (health: {health})"
                raise DemoMarketError(f"{heard}:\n{market.tail()}")
            time.sleep(0.3)


def customer_chat(market: Market, reseller: Any, prompt: str, max_tokens: int, timeout_s: float = 180) -> dict:
    """Create a customer API key as the reseller, stream one chat completion with it (server-sent events, as
    any OpenAI client reads them), then wait until the settlement worker has settled every receipt."""
    from inferchain.cli.reseller import sign_in

    with httpx.Client(base_url=market.url, timeout=60) as http:
        admin = sign_in(http, reseller)
        created = http.post("/admin/keys", json={"name": "demo customer"}, headers=admin)
        if not created.is_success:
            raise DemoMarketError(f"creating the API key failed: {created.text}")
        key = created.json()["key"]
        body = {
            "model": "SmolLM2-135M-Instruct", "messages": [{"role": "user", "content": prompt}],
            "max_tokens": max_tokens, "temperature": 0, "stream": True, "stream_options": {"include_usage": True},
        }  # fmt: skip
        pieces, usage = [], None
        started = time.monotonic()
        first_token_s = None
        headers = {"authorization": f"Bearer {key}"}
        with http.stream("POST", "/v1/chat/completions", json=body, headers=headers, timeout=timeout_s) as r:
            if r.status_code != 200:
                raise DemoMarketError(f"the gateway answered {r.status_code}: {r.read().decode(errors='replace')}")
            for line in r.iter_lines():
                if not line.startswith("data: ") or line == "data: [DONE]":
                    continue
                event = json.loads(line[6:])
                if "error" in event:
                    raise DemoMarketError(f"the gateway's stream failed: {event['error']}")
                for choice in event.get("choices", []):
                    text = choice.get("delta", {}).get("content") or ""
                    if text and first_token_s is None:
                        first_token_s = time.monotonic() - started
                    pieces.append(text)
                usage = event.get("usage") or usage
        deadline = time.monotonic() + timeout_s
        while True:
            rows = http.get("/admin/usage", headers=admin).json()["rows"]
            receipts = [rc for row in rows for rc in row["receipts"]]
            if receipts and all(rc["state"] in ("settled", "flagged") for rc in receipts):
                break
            market.check_alive()
            if time.monotonic() > deadline:
                raise DemoMarketError(f"the gateway's receipts were not settled in {timeout_s:.0f} s: {receipts}")
            time.sleep(0.5)
    return {
        "answer": "".join(pieces),
        "usage": usage,
        "first_token_seconds": round(first_token_s, 3) if first_token_s is not None else None,
        "spend_infer_wei": sum(int(rc["amount"]) for rc in receipts),
        "receipts": [
            {k: rc.get(k) for k in ("node", "span", "amount", "fee", "state", "settled_tx", "error")} for rc in receipts
        ],
    }
