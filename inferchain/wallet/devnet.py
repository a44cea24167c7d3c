"""The local development chain: a Hardhat node on 127.0.0.1 with the contracts deployed and accounts funded.

`up()` starts `hardhat node` in the background (PID and log in the data folder), waits until its JSON-RPC
answers, deploys, mints INFER to the first test accounts, and writes `devnet.json` (process, accounts) and
`deployment.json` (what every other command reads). `down()` stops it by PID; `status()` reports.
"""

from __future__ import annotations

import contextlib
import json
import os
import shutil
import signal
import socket
import subprocess
import time
import urllib.error
import urllib.request
from collections.abc import Callable
from dataclasses import asdict, dataclass, field
from pathlib import Path
from typing import Any

from inferchain.wallet.artifacts import find_repo_root
from inferchain.wallet.deployment import ONE_TOKEN, Deployment, DeploymentParams

HOST = "127.0.0.1"
#: Hardhat's well-known development mnemonic: its keys are public, never use them on a real network.
HARDHAT_MNEMONIC = "test test test test test test test test test test test junk"
DEVNET_FILE = "devnet.json"
DEPLOYMENT_FILE = "deployment.json"  # the same name default_deployment_path() uses
PID_FILE = "hardhat.pid"
LOG_FILE = "hardhat.log"
START_TIMEOUT_S = 60.0
STOP_TIMEOUT_S = 10.0


class DevnetError(RuntimeError):
    """The devnet could not be started, reached or stopped; the message says why and what to do."""


def free_port() -> int:
    with socket.socket(socket.AF_INET, socket.SOCK_STREAM) as s:
        s.bind((HOST, 0))
        return int(s.getsockname()[1])


def rpc_request(url: str, method: str, params: list[Any] | None = None, timeout_s: float = 2.0) -> Any:
    """One JSON-RPC call over HTTP (no web3 needed, so probing stays cheap)."""
    body = json.dumps({"jsonrpc": "2.0", "id": 1, "method": method, "params": params or []}).encode()
    req = urllib.request.Request(url, data=body, headers={"Content-Type": "application/json"})
    with urllib.request.urlopen(req, timeout=timeout_s) as resp:
        reply = json.loads(resp.read())
    if "error" in reply:
        raise DevnetError(f"{method} failed: {reply['error']}")
    return reply["result"]


def hardhat_dir(explicit: Path | None = None) -> Path:
    """The folder with hardhat.config.js and an installed node_modules (INFERCHAIN_HARDHAT_DIR overrides)."""
    env = os.environ.get("INFERCHAIN_HARDHAT_DIR")
    folder = explicit or (Path(env) if env else None) or find_repo_root()
    if folder is None:
        raise DevnetError(
            "cannot find the contracts checkout (hardhat.config.js); set INFERCHAIN_HARDHAT_DIR to it"
        )
    if not (folder / "node_modules" / ".bin" / "hardhat").exists():
        raise DevnetError(f"Hardhat is not installed in {folder}: run `npm ci` there first")
    return folder


def _log_tail(path: Path, lines: int = 20) -> str:
    try:
        return "\n".join(path.read_text(errors="replace").splitlines()[-lines:])
    except FileNotFoundError:
        return "(no log)"


class HardhatNode:
    """A `hardhat node` process on 127.0.0.1: started detached, stopped by PID (process group)."""

    def __init__(self, port: int, log_path: Path, cwd: Path) -> None:
        self.port = port
        self.log_path = log_path
        self.cwd = cwd
        self.proc: subprocess.Popen[bytes] | None = None

    @property
    def rpc_url(self) -> str:
        return f"http://{HOST}:{self.port}"

    def start(self, timeout_s: float = START_TIMEOUT_S) -> int:
        """Starts the node and waits (bounded) until eth_chainId answers; returns the PID."""
        if shutil.which("node") is None:
            raise DevnetError("Node.js (`node`) is not on PATH")
        self.log_path.parent.mkdir(parents=True, exist_ok=True)
        cmd = [
            str(self.cwd / "node_modules" / ".bin" / "hardhat"),
            "node",
            "--hostname",
            HOST,
            "--port",
            str(self.port),
        ]
        env = {**os.environ, "HARDHAT_DISABLE_TELEMETRY_PROMPT": "true", "FORCE_COLOR": "0"}
        with self.log_path.open("ab") as log:
            self.proc = subprocess.Popen(
                cmd,
                cwd=self.cwd,
                stdout=log,
                stderr=subprocess.STDOUT,
                stdin=subprocess.DEVNULL,
                env=env,
                start_new_session=True,  # own process group: survives the CLI, stopped as a group
            )
        deadline = time.monotonic() + timeout_s
        while time.monotonic() < deadline:
            if self.proc.poll() is not None:
                code = self.proc.returncode
                raise DevnetError(
                    f"hardhat node exited with code {code}; log tail:\n{_log_tail(self.log_path)}"
                )
            try:
                rpc_request(self.rpc_url, "eth_chainId", timeout_s=1.0)
                return self.proc.pid
            except (OSError, urllib.error.URLError, ValueError):
                time.sleep(0.2)
        self.stop()
        raise DevnetError(
            f"hardhat node did not answer on {self.rpc_url} within {timeout_s:.0f} s; "
            f"log tail:\n{_log_tail(self.log_path)}"
        )

    def stop(self, timeout_s: float = STOP_TIMEOUT_S) -> None:
        if self.proc is not None:
            stop_pid(self.proc.pid, timeout_s)
            with contextlib.suppress(subprocess.TimeoutExpired):
                self.proc.wait(timeout=1.0)

    def __enter__(self) -> HardhatNode:
        return self

    def __exit__(self, *exc: object) -> None:
        self.stop()


def _is_hardhat_node(pid: int) -> bool:
    import psutil

    try:
        proc = psutil.Process(pid)
        cmdline = " ".join(proc.cmdline())
        return proc.status() != psutil.STATUS_ZOMBIE and "hardhat" in cmdline and " node" in cmdline
    except (psutil.NoSuchProcess, psutil.AccessDenied):
        return False


def stop_pid(pid: int, timeout_s: float = STOP_TIMEOUT_S) -> bool:
    """SIGTERM hardhat node `pid` and its process group, SIGKILL after `timeout_s`; False if not ours."""
    if not _is_hardhat_node(pid):
        return False
    try:
        os.killpg(pid, signal.SIGTERM)
    except (ProcessLookupError, PermissionError):
        os.kill(pid, signal.SIGTERM)
    deadline = time.monotonic() + timeout_s
    while time.monotonic() < deadline:
        if not _is_hardhat_node(pid):
            return True
        time.sleep(0.1)
    try:
        os.killpg(pid, signal.SIGKILL)
    except (ProcessLookupError, PermissionError):
        os.kill(pid, signal.SIGKILL)
    return True


def devnet_accounts(count: int) -> list[dict[str, str]]:
    """The first `count` Hardhat development accounts (address and well-known private key)."""
    from eth_account import Account

    Account.enable_unaudited_hdwallet_features()
    out = []
    for i in range(count):
        acct = Account.from_mnemonic(HARDHAT_MNEMONIC, account_path=f"m/44'/60'/0'/0/{i}")
        out.append({"address": acct.address, "private_key": "0x" + bytes(acct.key).hex()})
    return out


@dataclass
class DevnetState:
    """What `devnet.json` holds."""

    pid: int
    port: int
    rpc_url: str
    chain_id: int
    log_file: str
    deployment_file: str
    started_at: int
    funded_amount: int
    accounts: list[dict[str, str]] = field(default_factory=list)

    @classmethod
    def load(cls, data_dir: Path) -> DevnetState | None:
        path = data_dir / DEVNET_FILE
        if not path.exists():
            return None
        try:
            return cls(**json.loads(path.read_text()))
        except (json.JSONDecodeError, TypeError) as exc:
            raise DevnetError(
                f"{path} is malformed ({exc}); remove it and run `inferchain devnet up`"
            ) from exc

    def save(self, data_dir: Path) -> Path:
        path = data_dir / DEVNET_FILE
        tmp = path.with_suffix(".json.tmp")
        tmp.write_text(json.dumps(asdict(self), indent=2) + "\n")
        os.replace(tmp, path)
        return path


@dataclass
class DevnetStatus:
    running: bool
    data_dir: str
    state: DevnetState | None = None
    block: int | None = None
    deployment: Deployment | None = None
    problem: str | None = None

    def to_json(self) -> dict[str, Any]:
        return {
            "running": self.running,
            "data_dir": self.data_dir,
            "rpc_url": self.state.rpc_url if self.state else None,
            "pid": self.state.pid if self.state else None,
            "chain_id": self.state.chain_id if self.state else None,
            "block": self.block,
            "log_file": self.state.log_file if self.state else None,
            "deployment_file": self.state.deployment_file if self.state else None,
            "addresses": asdict(self.deployment.addresses) if self.deployment else None,
            "accounts": [a["address"] for a in self.state.accounts] if self.state else [],
            "problem": self.problem,
        }


def status(data_dir: Path) -> DevnetStatus:
    """Whether the devnet recorded in `data_dir` runs and answers, with its deployment."""
    state = DevnetState.load(data_dir)
    if state is None:
        return DevnetStatus(False, str(data_dir), problem="no devnet recorded here")
    if not _is_hardhat_node(state.pid):
        return DevnetStatus(False, str(data_dir), state, problem=f"process {state.pid} is not running")
    try:
        block = int(rpc_request(state.rpc_url, "eth_blockNumber"), 16)
    except (OSError, urllib.error.URLError, ValueError, DevnetError) as exc:
        return DevnetStatus(
            False, str(data_dir), state, problem=f"RPC {state.rpc_url} does not answer: {exc}"
        )
    deployment = None
    dep_path = Path(state.deployment_file)
    if dep_path.exists():
        deployment = Deployment.load(dep_path)
    return DevnetStatus(True, str(data_dir), state, block=block, deployment=deployment)


def up(
    data_dir: Path,
    *,
    port: int | None = None,
    accounts: int = 10,
    fund: int = 1_000_000 * ONE_TOKEN,
    params: DeploymentParams | None = None,
    contracts_dir: Path | None = None,
    timeout_s: float = START_TIMEOUT_S,
    progress: Callable[[str], None] | None = None,
) -> tuple[DevnetStatus, bool]:
    """Starts (or finds running) the devnet in `data_dir`; returns (status, started_now)."""
    say = progress or (lambda _m: None)
    current = status(data_dir)
    if current.running:
        return current, False
    if current.state is not None:
        (data_dir / PID_FILE).unlink(missing_ok=True)
    if not 0 <= accounts <= 20:
        raise DevnetError("the Hardhat node has 20 development accounts: fund between 0 and 20")

    cwd = hardhat_dir(contracts_dir)
    data_dir.mkdir(parents=True, exist_ok=True)
    port = port or free_port()
    log_path = data_dir / LOG_FILE
    node = HardhatNode(port, log_path, cwd)
    say(f"starting hardhat node on {node.rpc_url}")
    pid = node.start(timeout_s=timeout_s)
    (data_dir / PID_FILE).write_text(f"{pid}\n")
    try:
        from web3 import Web3

        from inferchain.wallet.deployment import deploy, mint

        w3 = Web3(Web3.HTTPProvider(node.rpc_url, request_kwargs={"timeout": 30}))
        deployer = w3.eth.accounts[0]
        dep_path = data_dir / DEPLOYMENT_FILE
        deployment = deploy(w3, deployer, params, out=dep_path, rpc_url=node.rpc_url, progress=say)
        funded = devnet_accounts(accounts)
        if funded:
            say(f"minting {fund / ONE_TOKEN:,.0f} INFER to {len(funded)} accounts")
        for acct in funded:
            mint(w3, deployment, deployer, acct["address"], fund)
        state = DevnetState(
            pid=pid,
            port=port,
            rpc_url=node.rpc_url,
            chain_id=deployment.chain_id,
            log_file=str(log_path),
            deployment_file=str(dep_path),
            started_at=int(time.time()),
            funded_amount=fund,
            accounts=funded,
        )
        state.save(data_dir)
    except BaseException:
        node.stop()
        (data_dir / PID_FILE).unlink(missing_ok=True)
        raise
    return status(data_dir), True


def down(data_dir: Path, timeout_s: float = STOP_TIMEOUT_S) -> bool:
    """Stops the devnet of `data_dir`; False if none was running.

    Keeps the log; removes the PID file, devnet.json and deployment.json (the chain's state died with it).
    """
    state = DevnetState.load(data_dir)
    pid_path = data_dir / PID_FILE
    pid = state.pid if state else None
    if pid is None and pid_path.exists():
        try:
            pid = int(pid_path.read_text().strip())
        except ValueError:
            pid = None
    stopped = stop_pid(pid, timeout_s) if pid else False
    pid_path.unlink(missing_ok=True)
    (data_dir / DEVNET_FILE).unlink(missing_ok=True)
    (data_dir / DEPLOYMENT_FILE).unlink(missing_ok=True)
    return stopped

