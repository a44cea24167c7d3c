"""`inferchain devnet up|status|down`: a real Hardhat node in the background, deployed and funded."""

from __future__ import annotations

import json
import shutil
from pathlib import Path

import psutil
import pytest
from typer.testing import CliRunner

from inferchain.cli.devnet import app
from inferchain.wallet import devnet
from inferchain.wallet.chain import Chain
from inferchain.wallet.deployment import ONE_TOKEN, Deployment

REPO = Path(__file__).resolve().parents[1]
runner = CliRunner()


def invoke(*args: str) -> tuple[int, dict]:
    result = runner.invoke(app, [*args, "--json"])
    return result.exit_code, json.loads(result.stdout.strip().splitlines()[-1])


def test_status_and_down_without_a_devnet(tmp_path: Path) -> None:
    code, info = invoke("status", "--data-dir", str(tmp_path))
    assert code == 1
    assert info["running"] is False
    assert info["problem"] == "no devnet recorded here"
    code, info = invoke("down", "--data-dir", str(tmp_path))
    assert code == 0
    assert info["stopped"] is False


def test_a_stale_record_is_reported_not_trusted(tmp_path: Path) -> None:
    (tmp_path / "devnet.json").write_text("{not json")
    code, info = invoke("status", "--data-dir", str(tmp_path))
    assert code == 1
    assert "malformed" in info["error"]
    dead = devnet.DevnetState(
        pid=2**22 + 7,
        port=1,
        rpc_url="http://127.0.0.1:1",
        chain_id=31337,
        log_file="",
        deployment_file="",
        started_at=0,
        funded_amount=0,
    )
    dead.save(tmp_path)
    code, info = invoke("status", "--data-dir", str(tmp_path))
    assert code == 1
    assert "is not running" in info["problem"]


def test_up_reports_a_missing_hardhat_install(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    empty = tmp_path / "checkout"
    empty.mkdir()
    monkeypatch.setenv("INFERCHAIN_HARDHAT_DIR", str(empty))
    code, info = invoke("up", "--data-dir", str(tmp_path / "data"))
    assert code == 1
    assert "npm ci" in info["error"]


def test_data_dir_defaults_to_inferchain_home(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setenv("INFERCHAIN_HOME", str(tmp_path / "home"))
    code, info = invoke("status")
    assert code == 1
    assert info["data_dir"] == str((tmp_path / "home").resolve())


@pytest.mark.integration
def test_up_status_down(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    if shutil.which("node") is None or not (REPO / "node_modules" / ".bin" / "hardhat").exists():
        pytest.skip("Hardhat not installed (run `npm ci` or scripts/contracts_test.sh)")
    data = tmp_path / "home"
    monkeypatch.setenv("INFERCHAIN_HOME", str(data))
    code, info = invoke("up", "--data-dir", str(data), "--accounts", "3", "--fund", "500", "--timeout", "60")
    try:
        assert code == 0, info
        assert info["started"] is True and info["running"] is True
        assert info["rpc_url"].startswith("http://127.0.0.1:")
        pid = info["pid"]
        assert psutil.pid_exists(pid)
        assert (data / "hardhat.pid").read_text().strip() == str(pid)
        assert (data / "hardhat.log").exists()

        deployment = Deployment.load(data / "deployment.json")
        assert deployment.rpc_url == info["rpc_url"]
        assert info["addresses"]["escrow"] == deployment.addresses.escrow
        chain = Chain.open(data / "deployment.json")
        assert Chain.open().deployment == deployment  # INFERCHAIN_HOME points at `data` (see monkeypatch)
        for address in info["accounts"]:
            assert chain.token_balance(address) == 500 * ONE_TOKEN
        state = json.loads((data / "devnet.json").read_text())
        assert [a["address"] for a in state["accounts"]] == info["accounts"]

        code, again = invoke("up", "--data-dir", str(data))
        assert code == 0 and again["started"] is False and again["pid"] == pid

        code, st = invoke("status", "--data-dir", str(data))
        assert code == 0 and st["running"] is True and st["block"] >= deployment.block
    finally:
        code, down = invoke("down", "--data-dir", str(data))
    assert code == 0 and down["stopped"] is True
    assert not devnet._is_hardhat_node(pid)
    assert not (data / "hardhat.pid").exists()
    assert not (data / "deployment.json").exists()
    code, st = invoke("status", "--data-dir", str(data))
    assert code == 1 and st["running"] is False
