"""`inferchain reseller`: a reseller's API keys and usage on a market's gateway, from the terminal.

Every command signs in with the reseller's wallet (an EIP-4361 message signed locally; the key never leaves
this machine), then calls the gateway's admin API. The web UI's reseller page does the same with a browser
wallet. Money: the reseller's escrow deposit and the gateway key it authorises are `inferchain escrow ...`.
"""

from __future__ import annotations

import time
from typing import Annotated, Any

import httpx
import typer

from inferchain.cli.node import JsonOption, PassphraseFileOption, WalletOption
from inferchain.cli.output import console

app = typer.Typer(help="A reseller's customer API keys, their limits and usage on a market's gateway.")

MarketOption = Annotated[str, typer.Option("--market", help="The market's HTTP URL.")]
DEFAULT_MARKET = "http://127.0.0.1:8000"


def sign_in(http: httpx.Client, account: Any, ttl_s: float = 300) -> dict[str, str]:
    """Sign in to the gateway's admin API with `account` (EIP-4361 over EIP-191); returns the auth header."""
    from inferchain.marketplace.gateway import siwe

    nonce = http.get("/admin/nonce")
    nonce.raise_for_status()
    n, now = nonce.json(), time.time()
    msg = siwe.SignInMessage(n["domain"], account.address, str(http.base_url).rstrip("/"), n["chain_id"],
                             n["nonce"], now, now + ttl_s)  # fmt: skip
    login = http.post("/admin/login", json={"message": msg.text(), "signature": siwe.sign(msg, account.key)})
    if not login.is_success:
        raise httpx.HTTPStatusError(f"sign-in refused: {login.text}", request=login.request, response=login)
    return {"authorization": f"Bearer {login.json()['token']}"}


def _call(market: str, wallet: str | None, passphrase_file: Any, as_json: bool, method: str, path: str,
          body: dict | None = None, params: dict | None = None) -> Any:  # fmt: skip
    from inferchain.cli.wallet import fail, unlock

    account = unlock(wallet, passphrase_file, as_json)
    try:
        with httpx.Client(base_url=market, timeout=30) as http:
            headers = sign_in(http, account)
            r = http.request(method, path, json=body, params=params, headers=headers)
    except httpx.TransportError as e:
        fail(f"cannot reach the market at {market}: {e}", as_json)
    except httpx.HTTPStatusError as e:
        fail(str(e), as_json)
    if not r.is_success:
        try:
            detail = r.json().get("error", {}).get("message") or r.text
        except ValueError:
            detail = r.text
        fail(f"{method} {path}: {r.status_code} {detail}", as_json)
    return r.json()


def _limits(tokens_per_day: int | None, spend_per_month: str | None, rpm: int | None, as_json: bool) -> dict:
    from inferchain.cli.wallet import guarded
    from inferchain.wallet.operator import parse_amount

    spend = None if spend_per_month is None else guarded(lambda: parse_amount(spend_per_month), as_json)
    return {"tokens_per_day": tokens_per_day, "spend_per_month": spend, "requests_per_minute": rpm}


TokensOpt = Annotated[int | None, typer.Option("--tokens-per-day", min=0, help="Tokens per UTC day.")]
SpendOpt = Annotated[str | None, typer.Option("--spend-per-month", help="INFER per calendar month (UTC).")]
RpmOpt = Annotated[int | None, typer.Option("--requests-per-minute", min=0, help="Requests per rolling minute.")]


def _show_key(k: dict) -> None:
    from inferchain.wallet.operator import fmt_token

    spend = "-" if k["spend_per_month"] is None else fmt_token(int(k["spend_per_month"]))
    state = "revoked" if k["revoked_at"] else "active"
    console.print(
        f"{k['id']}  {state:7}  {k['name'] or '-':20}  tokens/day {k['tokens_per_day'] or '-'}  "
        f"spend/month {spend}  req/min {k['requests_per_minute'] or '-'}"
    )
    if k.get("key"):
        console.print(f"  key (shown once): [bold]{k['key']}[/]")


def _out(data: Any, as_json: bool, show: Any) -> None:
    from inferchain.cli.wallet import emit

    if as_json:
        emit(data if isinstance(data, dict) else {"items": data})
    else:
        show(data)


@app.command()
def keys(
    market: MarketOption = DEFAULT_MARKET,
    wallet: WalletOption = None,
    passphrase_file: PassphraseFileOption = None,
    as_json: JsonOption = False,
) -> None:
    """List the reseller's API keys and their limits."""

    def show(ks: list[dict]) -> None:
        for k in ks:
            _show_key(k)
        if not ks:
            console.print("no keys yet")

    _out(_call(market, wallet, passphrase_file, as_json, "GET", "/admin/keys"), as_json, show)


@app.command("create-key")
def create_key(
    name: str = typer.Argument("", help="A label for the customer."),
    tokens_per_day: TokensOpt = None,
    spend_per_month: SpendOpt = None,
    requests_per_minute: RpmOpt = None,
    market: MarketOption = DEFAULT_MARKET,
    wallet: WalletOption = None,
    passphrase_file: PassphraseFileOption = None,
    as_json: JsonOption = False,
) -> None:
    """Create a customer API key (printed once; only its hash is stored)."""
    body = {"name": name, **_limits(tokens_per_day, spend_per_month, requests_per_minute, as_json)}
    _out(_call(market, wallet, passphrase_file, as_json, "POST", "/admin/keys", body), as_json, _show_key)


def _key_action(method: str, suffix: str, doc: str) -> Any:
    """A command that acts on one key by id (rotate, revoke) and shows the key as it is afterwards."""

    def command(
        key_id: str = typer.Argument(..., help="The key's id (the 12 hex after `ick_`)."),
        market: MarketOption = DEFAULT_MARKET,
        wallet: WalletOption = None,
        passphrase_file: PassphraseFileOption = None,
        as_json: JsonOption = False,
    ) -> None:
        data = _call(market, wallet, passphrase_file, as_json, method, f"/admin/keys/{key_id}{suffix}")
        _out(data, as_json, _show_key)

    command.__doc__ = doc
    return command


ROTATE_DOC = "Replace a key's secret (the old one stops working at once); prints the new key once."
app.command("rotate")(_key_action("POST", "/rotate", ROTATE_DOC))
app.command("revoke")(_key_action("DELETE", "", "Revoke a key; its next request is refused."))


@app.command()
def limits(
    key_id: str = typer.Argument(..., help="The key's id."),
    tokens_per_day: TokensOpt = None,
    spend_per_month: SpendOpt = None,
    requests_per_minute: RpmOpt = None,
    market: MarketOption = DEFAULT_MARKET,
    wallet: WalletOption = None,
    passphrase_file: PassphraseFileOption = None,
    as_json: JsonOption = False,
) -> None:
    """Set a key's limits (an option left out means no limit of that kind)."""
    body = _limits(tokens_per_day, spend_per_month, requests_per_minute, as_json)
    data = _call(market, wallet, passphrase_file, as_json, "PUT", f"/admin/keys/{key_id}/limits", body)
    _out(data, as_json, _show_key)


@app.command()
def defaults(
    max_price_per_1k: str | None = typer.Option(
        None, "--max-price-per-1k", help="INFER per 1k tokens for the whole route (left out: no price cap)."
    ),
    max_latency_ms: float | None = typer.Option(
        None, "--max-latency-ms", min=0.001, help="Estimated ms per token (left out: no latency cap)."
    ),
    show_only: bool = typer.Option(False, "--show", help="Only show the current defaults."),
    market: MarketOption = DEFAULT_MARKET,
    wallet: WalletOption = None,
    passphrase_file: PassphraseFileOption = None,
    as_json: JsonOption = False,
) -> None:
    """Set the route caps your customers' requests get when they name none (a request's own caps still win)."""
    from inferchain.cli.wallet import guarded
    from inferchain.wallet.operator import fmt_token, parse_amount

    if show_only:
        data = _call(market, wallet, passphrase_file, as_json, "GET", "/admin/settings")
    else:
        price = None if max_price_per_1k is None else guarded(lambda: parse_amount(max_price_per_1k), as_json)
        body = {"max_price_per_1k": price, "max_latency_ms": max_latency_ms}
        data = _call(market, wallet, passphrase_file, as_json, "PUT", "/admin/settings", body)

    def show(d: dict) -> None:
        price = d["max_price_per_1k"]
        latency = d["max_latency_ms"]
        console.print(
            f"default caps: price {'none' if price is None else fmt_token(int(price)) + ' INFER per 1k tokens'}, "
            f"latency {'none' if latency is None else f'{latency:g} ms per token'}"
        )

    _out(data, as_json, show)


@app.command()
def usage(
    key_id: str | None = typer.Option(None, "--key", help="Only this key."),
    since_hours: float = typer.Option(24 * 30, "--since-hours", min=0, help="How far back."),
    market: MarketOption = DEFAULT_MARKET,
    wallet: WalletOption = None,
    passphrase_file: PassphraseFileOption = None,
    as_json: JsonOption = False,
) -> None:
    """Requests, tokens and spend per key, and how each request's node receipts were settled."""
    from inferchain.wallet.operator import fmt_token

    params: dict[str, Any] = {"since": time.time() - since_hours * 3600}
    if key_id:
        params["key_id"] = key_id
    data = _call(market, wallet, passphrase_file, as_json, "GET", "/admin/usage", params=params)

    def show(u: dict) -> None:
        console.print(
            f"{u['requests']} requests settled, {u['prompt_tokens']} prompt + {u['completion_tokens']} completion "
            f"tokens, spend {fmt_token(int(u['spend']))} INFER, {u['open_reservations']} open"
        )
        for row in u["rows"]:
            states: dict[str, int] = {}
            for rc in row["receipts"]:
                states[rc["state"]] = states.get(rc["state"], 0) + 1
            receipts = ", ".join(f"{n} {s}" for s, n in sorted(states.items())) or "no receipts"
            console.print(
                f"  {row['key_id']}  {row['status']:8}  {row['prompt_tokens']}+{row['completion_tokens']} tokens  "
                f"{fmt_token(int(row['spend']))} INFER  receipts: {receipts}"
            )

    _out(data, as_json, show)
