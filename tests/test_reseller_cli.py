"""`inferchain reseller ...` against a running gateway over HTTP: the CLI signs in with a local wallet (EIP-4361)
and manages the reseller's customer keys; the gateway's own key store sees the result."""

from __future__ import annotations

import json
from pathlib import Path

import pytest
from eth_account import Account
from typer.testing import CliRunner

from inferchain.cli import app
from tests.test_gateway_accounts import admin_api  # noqa: F401 - the running gateway fixture

PASS = "reseller passphrase"
runner = CliRunner()


def cli(*args: str) -> tuple[int, dict]:
    result = runner.invoke(app, [*args, "--json"])
    lines = result.stdout.strip().splitlines()
    assert lines, result.stderr
    return result.exit_code, json.loads(lines[-1])


def test_reseller_cli_manages_keys(admin_api, tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:  # noqa: F811
    url, gateway = admin_api
    monkeypatch.setenv("INFERCHAIN_HOME", str(tmp_path))
    monkeypatch.setenv("INFERCHAIN_SCRYPT_N", "1024")
    monkeypatch.setenv("INFERCHAIN_PASSPHRASE", PASS)
    monkeypatch.delenv("INFERCHAIN_WALLET", raising=False)
    account = Account.create()
    assert cli("wallet", "import", "shop", "--from-file", _key_file(tmp_path, account))[0] == 0
    m = ("--market", url)

    code, made = cli("reseller", "create-key", "customer-1", "--tokens-per-day", "500", "--spend-per-month", "2", *m)
    assert code == 0 and made["key"].startswith(f"ick_{made['id']}_") and made["tokens_per_day"] == 500
    assert made["spend_per_month"] == 2 * 10**18
    assert gateway.keys.authenticate(made["key"]).reseller == account.address  # the gateway knows it, as ours

    code, listed = cli("reseller", "keys", *m)
    assert code == 0 and [k["id"] for k in listed["items"]] == [made["id"]] and "key" not in listed["items"][0]
    code, limited = cli("reseller", "limits", made["id"], "--requests-per-minute", "7", *m)
    assert code == 0 and limited["requests_per_minute"] == 7 and limited["tokens_per_day"] is None
    code, rotated = cli("reseller", "rotate", made["id"], *m)
    assert code == 0 and rotated["key"] != made["key"]
    code, revoked = cli("reseller", "revoke", made["id"], *m)
    assert code == 0 and revoked["revoked_at"] is not None
    code, used = cli("reseller", "usage", *m)
    assert code == 0 and used["requests"] == 0 and used["rows"] == []
    # default route caps for this reseller's customers' requests that name none
    code, caps = cli("reseller", "defaults", "--max-price-per-1k", "0.5", "--max-latency-ms", "250", *m)
    assert code == 0 and caps == {"ok": True, "max_price_per_1k": 5 * 10**17, "max_latency_ms": 250.0}
    assert gateway.keys.defaults(account.address).max_price_per_1k == 5 * 10**17
    code, shown = cli("reseller", "defaults", "--show", *m)
    assert code == 0 and shown == caps
    code, cleared = cli("reseller", "defaults", *m)
    assert code == 0 and cleared == {"ok": True, "max_price_per_1k": None, "max_latency_ms": None}

    code, err = cli("reseller", "revoke", "000000000000", *m)
    assert code == 1 and "404" in err["error"]
    code, err = cli("reseller", "keys", "--market", "http://127.0.0.1:9")
    assert code == 1 and "cannot reach the market" in err["error"]


def _key_file(tmp_path: Path, account) -> str:  # type: ignore[no-untyped-def]
    path = tmp_path / "key.txt"
    path.write_text("0x" + bytes(account.key).hex() + "\n")
    return str(path)
