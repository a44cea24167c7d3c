"""`inferchain wallet ...` and the node operator's transactions, driven through the real CLI.

Unit tests use keystores in a temporary INFERCHAIN_HOME; the integration test runs a real Hardhat node on
127.0.0.1 and checks on-chain state after every step, from `wallet create` to `node claim`.
"""

from __future__ import annotations

import json
import os
import shutil
import stat
from collections.abc import Iterator
from pathlib import Path

import pytest
from typer.testing import CliRunner

from inferchain.cli import app
from inferchain.wallet.devnet import HARDHAT_MNEMONIC, free_port

REPO = Path(__file__).resolve().parents[1]
PASS = "correct horse battery staple"
runner = CliRunner()


@pytest.fixture
def home(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> Path:
    monkeypatch.setenv("INFERCHAIN_HOME", str(tmp_path))
    monkeypatch.setenv("INFERCHAIN_SCRYPT_N", "1024")  # cheap KDF for tests; the default is 2**18
    monkeypatch.setenv("INFERCHAIN_PASSPHRASE", PASS)
    monkeypatch.delenv("INFERCHAIN_WALLET", raising=False)
    return tmp_path


def cli(*args: str, input: str | None = None) -> tuple[int, dict]:
    """Runs `inferchain ARGS --json`; returns (exit code, the JSON object printed)."""
    result = runner.invoke(app, [*args, "--json"], input=input)
    assert result.exception is None or isinstance(result.exception, SystemExit), result.exception
    lines = result.stdout.strip().splitlines()
    assert lines, f"no output from {args}: {result.stderr}"
    return result.exit_code, json.loads(lines[-1])


def cli_text(*args: str) -> tuple[int, str, str]:
    result = runner.invoke(app, list(args))
    assert result.exception is None or isinstance(result.exception, SystemExit), result.exception
    return result.exit_code, result.stdout, result.stderr


def assert_one_line_error(args: tuple[str, ...], *needles: str) -> None:
    """The command fails with exit 1 and one line naming the problem, both in text and JSON mode."""
    code, out, err = cli_text(*args)
    assert code == 1, (out, err)
    assert "Traceback" not in out + err
    lines = err.strip().splitlines()
    assert len(lines) == 1 and lines[0].startswith("error:"), err
    code, data = cli(*args)
    assert code == 1 and data["ok"] is False
    for needle in needles:
        assert needle in data["error"], data["error"]


# -- keystores ----------------------------------------------------------------------------------------------


def test_create_list_show_export_remove(home: Path) -> None:
    code, made = cli("wallet", "create", "op")
    assert code == 0
    path = Path(made["path"])
    assert path.parent == home / "wallets"
    assert stat.S_IMODE(path.stat().st_mode) == 0o600
    assert stat.S_IMODE(path.parent.stat().st_mode) == 0o700
    document = json.loads(path.read_text())
    assert document["crypto"]["kdf"] == "scrypt"

    code, listed = cli("wallet", "list")
    assert code == 0 and [w["name"] for w in listed["wallets"]] == ["op"]
    code, out, _ = cli_text("wallet", "show", "op")
    assert code == 0 and made["address"] in out

    code, exported = cli("wallet", "export", "op")
    assert code == 0
    from eth_account import Account

    assert Account.from_key(exported["private_key"]).address == made["address"]
    for args in (("wallet", "create", "x2"), ("wallet", "list"), ("wallet", "show", "op")):
        _, out, err = cli_text(*args)
        assert exported["private_key"][2:] not in out + err  # only `export` ever prints the key

    assert_one_line_error(("wallet", "create", "op"), "already exists")
    assert_one_line_error(("wallet", "remove", "op"), "--yes")
    code, removed = cli("wallet", "remove", "op", "--yes")
    assert code == 0 and removed["address"] == made["address"]
    assert not path.exists()


def test_import_private_key_and_mnemonic(home: Path) -> None:
    from inferchain.wallet.devnet import devnet_accounts

    first, second = devnet_accounts(2)
    keyfile = home / "key.txt"
    keyfile.write_text(second["private_key"] + "\n")
    code, made = cli("wallet", "import", "k", "--from-file", str(keyfile))
    assert code == 0 and made["address"] == second["address"]
    code, made = cli("wallet", "import", "m", "--mnemonic", input=HARDHAT_MNEMONIC + "\n")
    assert code == 0 and made["address"] == first["address"]
    assert_one_line_error(("wallet", "import", "again", "--from-file", str(keyfile)), "already stored as wallet 'k'")
    keyfile.write_text("0x1234\n")
    assert_one_line_error(("wallet", "import", "bad", "--from-file", str(keyfile)), "not a valid private key")
    keyfile.write_text("apple banana cherry\n")
    assert_one_line_error(("wallet", "import", "bad", "--mnemonic", "--from-file", str(keyfile)), "mnemonic")


def test_bad_passphrases_and_damaged_keystores(home: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    assert cli("wallet", "create", "op")[0] == 0
    wrong = home / "wrong.txt"
    wrong.write_text("not it\n")
    assert_one_line_error(("wallet", "export", "op", "--passphrase-file", str(wrong)), "wrong passphrase", "'op'")
    empty = home / "empty.txt"
    empty.write_text("")
    assert_one_line_error(("wallet", "export", "op", "--passphrase-file", str(empty)), "is empty")
    assert_one_line_error(("wallet", "export", "op", "--passphrase-file", str(home / "missing")), "cannot read")
    monkeypatch.delenv("INFERCHAIN_PASSPHRASE")
    assert_one_line_error(("wallet", "export", "op"), "no passphrase")  # no terminal: never hangs on a prompt

    assert_one_line_error(("wallet", "show", "nobody"), "no wallet named 'nobody'", "known: op")
    assert_one_line_error(("wallet", "create", "../evil"), "invalid wallet name")
    wallets = home / "wallets"
    (wallets / "garbage.json").write_text("{not json")
    assert_one_line_error(("wallet", "show", "garbage"), "not valid JSON")
    (wallets / "foreign.json").write_text(json.dumps({"hello": "world"}))
    assert_one_line_error(("wallet", "show", "foreign"), "not a version 3")
    doc = json.loads((wallets / "op.json").read_text())
    doc["crypto"]["ciphertext"] = "00" * 32  # tampered: the MAC no longer matches, whatever the passphrase
    (wallets / "tampered.json").write_text(json.dumps({**doc, "address": "0" * 40}))
    monkeypatch.setenv("INFERCHAIN_PASSPHRASE", PASS)
    assert_one_line_error(("wallet", "export", "tampered"), "wrong passphrase")
    code, listed = cli("wallet", "list")
    assert code == 0 and {w["name"]: w["address"] for w in listed["wallets"]}["garbage"] == "?"
    assert cli("wallet", "remove", "garbage", "--yes")[0] == 0  # a damaged file can still be removed


def test_rpc_unreachable_and_missing_deployment(home: Path) -> None:
    assert cli("wallet", "create", "op")[0] == 0
    assert_one_line_error(("wallet", "balance", "op"), "no deployment file", "devnet up")
    deployment = {
        "format": 1,
        "chain_id": 31337,
        "rpc_url": f"http://127.0.0.1:{free_port()}",
        "addresses": {"token": "0x" + "11" * 20, "reward_pool": "0x" + "22" * 20, "staking": "0x" + "33" * 20,
                      "escrow": "0x" + "44" * 20},
        "deployer": "0x" + "55" * 20,
        "block": 1,
    }
    (home / "deployment.json").write_text(json.dumps(deployment))
    assert_one_line_error(("wallet", "balance", "op"), "no Ethereum JSON-RPC answering at http://127.0.0.1:")
    assert_one_line_error(("node", "stake", "100", "--wallet", "op"), "no Ethereum JSON-RPC answering")
    assert_one_line_error(("node", "stake", "lots", "--wallet", "op"), "not an amount")


# -- on a real chain ------------------------------------------------------------------------------------------


@pytest.fixture
def devnet_home(home: Path) -> Iterator[Path]:
    if shutil.which("node") is None or not (REPO / "node_modules" / ".bin" / "hardhat").exists():
        pytest.skip("Hardhat not installed (run `npm ci` or scripts/contracts_test.sh)")
    from inferchain.wallet import devnet

    devnet.up(home, accounts=2, fund=100_000 * 10**18, timeout_s=60)
    try:
        yield home
    finally:
        devnet.down(home)


def _advance(chain, seconds: int) -> None:  # type: ignore[no-untyped-def]
    chain.w3.provider.make_request("evm_increaseTime", [seconds])
    chain.w3.provider.make_request("evm_mine", [])


@pytest.mark.integration
def test_operator_life_cycle_on_hardhat(devnet_home: Path) -> None:
    from eth_account import Account

    from inferchain.wallet.chain import Chain
    from inferchain.wallet.deployment import ONE_TOKEN
    from inferchain.wallet.devnet import devnet_accounts
    from inferchain.wallet.receipts import Receipt, SignedReceipt

    chain = Chain.open()
    code, made = cli("wallet", "create", "op")
    assert code == 0
    node = made["address"]
    assert chain.w3.eth.get_balance(node) == 0

    # A new wallet has no gas and no INFER: every action says so in one line.
    assert_one_line_error(("node", "register"), "no ETH")
    code, funded = cli("wallet", "faucet", "op", "--eth", "5", "--infer", "500")
    assert code == 0
    assert chain.w3.eth.get_balance(node) == 5 * ONE_TOKEN and chain.token_balance(node) == 500 * ONE_TOKEN

    assert_one_line_error(("node", "stake", "100"), "not registered", "node register")
    code, reg = cli("node", "register")
    assert code == 0 and reg["txs"][0]["what"] == "register"
    assert chain.node_info(node)["registered"] is True
    assert_one_line_error(("node", "register"), "already registered")

    assert_one_line_error(("node", "stake", "50"), "below the minimum of 100 INFER")
    assert_one_line_error(("node", "stake", "600"), "insufficient INFER balance", "holds 500")
    assert chain.node_info(node)["stake"] == 0
    code, staked = cli("node", "stake", "150")
    assert code == 0 and [t["what"] for t in staked["txs"]] == ["approve", "stake"]
    assert chain.node_info(node)["stake"] == 150 * ONE_TOKEN and chain.is_routable(node)
    assert chain.token_balance(node) == 350 * ONE_TOKEN

    # Earn something: a buyer (a funded devnet account) deposits, and one receipt both signed is settled.
    buyer = Account.from_key(devnet_accounts(2)[1]["private_key"])
    chain.deposit(buyer, 1000 * ONE_TOKEN)
    node_key = Account.from_key(cli("wallet", "export", "op")[1]["private_key"])
    receipt = Receipt(
        session_id=b"\x01" * 32, buyer=buyer.address, node=node, model_id=b"\x02" * 32, span_start=0,
        span_end=10, tokens_in=100, tokens_out=100, price_per_1k=ONE_TOKEN, activation_commitment=b"\x03" * 32,
        expiry=2**40,
    )  # fmt: skip
    domain = chain.deployment.receipt_domain
    chain.settle(buyer, SignedReceipt(receipt, receipt.sign(node_key, domain), receipt.sign(buyer, domain)))
    earned = receipt.amount_owed * 95 // 100  # 5% protocol fee
    code, bal = cli("wallet", "balance", "op")
    assert code == 0 and int(bal["earnings"]) == earned and int(bal["stake"]) == 150 * ONE_TOKEN
    assert bal["routable"] is True

    code, unstaked = cli("node", "unstake")
    assert code == 0
    info = chain.node_info(node)
    assert info["stake"] == 0 and info["unbonding"] == 150 * ONE_TOKEN and not chain.is_routable(node)
    assert_one_line_error(("node", "unstake"), "nothing is staked", "already unbonding")
    assert_one_line_error(("node", "withdraw"), "withdrawable in")

    _advance(chain, 3700)  # past the unbonding delay (60 s) and the end of reward epoch 0 (1 h)
    code, withdrew = cli("node", "withdraw")
    assert code == 0
    assert chain.node_info(node)["unbonding"] == 0 and chain.token_balance(node) == 500 * ONE_TOKEN
    assert_one_line_error(("node", "withdraw"), "nothing is unbonding")

    code, st = cli("node", "status")
    assert code == 0 and int(st["rewards"]) > 0 and st["reward_epochs"] == {"0": st["rewards"]}
    rewards = int(st["rewards"])
    code, claimed = cli("node", "claim")
    assert code == 0 and [t["what"] for t in claimed["txs"]] == ["claimEarnings", "claim rewards"]
    assert int(claimed["received"]) == earned + rewards
    assert chain.token_balance(node) == 500 * ONE_TOKEN + earned + rewards
    assert chain.earnings(node) == 0
    assert_one_line_error(("node", "claim"), "nothing to claim")

    # A wrong passphrase is refused before anything is sent.
    os.environ["INFERCHAIN_PASSPHRASE"] = "nope"
    assert_one_line_error(("node", "stake", "100"), "wrong passphrase")


@pytest.mark.integration
def test_payer_escrow_life_cycle_on_hardhat(devnet_home: Path) -> None:
    """A buyer or reseller: deposit (approve first), authorise a countersigning key and revoke it, ask to
    withdraw, wait out the delay, withdraw; each mistake is one plain line."""
    from inferchain.wallet.chain import Chain
    from inferchain.wallet.deployment import ONE_TOKEN

    chain = Chain.open()
    code, made = cli("wallet", "create", "payer")
    payer = made["address"]
    assert_one_line_error(("escrow", "deposit", "10"), "insufficient INFER balance")
    assert cli("wallet", "faucet", "payer", "--eth", "5", "--infer", "100")[0] == 0

    code, dep = cli("escrow", "deposit", "40")
    assert code == 0 and [t["what"] for t in dep["txs"]] == ["approve", "deposit"]
    assert chain.escrow_balance(payer) == 40 * ONE_TOKEN and chain.token_balance(payer) == 60 * ONE_TOKEN
    assert_one_line_error(("escrow", "deposit", "61"), "insufficient INFER balance", "holds 60")
    assert_one_line_error(("escrow", "deposit", "abc"), "not an amount")

    gateway = "0x" + "ab" * 20
    escrow = chain.contracts.escrow.functions
    assert cli("escrow", "authorize", gateway)[0] == 0
    assert escrow.isAuthorizedSigner(payer, chain.w3.to_checksum_address(gateway)).call() is True
    assert_one_line_error(("escrow", "authorize", gateway), "already authorised")
    assert_one_line_error(("escrow", "authorize", "0x1234"), "not an address")
    assert cli("escrow", "authorize", gateway, "--revoke")[0] == 0
    assert escrow.isAuthorizedSigner(payer, chain.w3.to_checksum_address(gateway)).call() is False

    assert_one_line_error(("escrow", "withdraw"), "no withdrawal pending")
    assert_one_line_error(("escrow", "request-withdrawal", "41"), "between 0 and 40")
    code, asked = cli("escrow", "request-withdrawal", "15")
    assert code == 0 and asked["available_at"] > 0
    assert_one_line_error(("escrow", "withdraw"), "possible in")
    code, st = cli("escrow", "status")
    assert code == 0 and st["escrow"] == str(40 * ONE_TOKEN) and st["withdrawal"]["amount"] == str(15 * ONE_TOKEN)
    _advance(chain, st["withdraw_delay_s"] + 1)
    code, out = cli("escrow", "withdraw")
    assert code == 0 and out["amount"] == str(15 * ONE_TOKEN)
    assert chain.escrow_balance(payer) == 25 * ONE_TOKEN and chain.token_balance(payer) == 75 * ONE_TOKEN
