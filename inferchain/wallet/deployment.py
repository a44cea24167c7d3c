"""Deploying the contracts and reading a deployment back: the file every other command reads.

`deploy(w3, deployer)` deploys InferToken, RewardPool, NodeStaking and PaymentEscrow, wires them together
and returns a `Deployment` (chain id, RPC URL, addresses, block), optionally written as JSON.
"""

from __future__ import annotations

import json
import os
import time
from collections.abc import Callable
from dataclasses import asdict, dataclass, field
from pathlib import Path
from typing import Any

from web3 import Web3
from web3.contract import Contract

from inferchain.wallet.artifacts import load_artifact
from inferchain.wallet.tx import Sender, send, sender_address
from inferchain.wallet.typed_data import Domain

TOKEN_DECIMALS = 18
ONE_TOKEN = 10**TOKEN_DECIMALS
DEPLOYMENT_FORMAT = 1


def default_home() -> Path:
    """The inferchain data folder: $INFERCHAIN_HOME, or ~/.inferchain."""
    env = os.environ.get("INFERCHAIN_HOME")
    return Path(env).expanduser() if env else Path.home() / ".inferchain"


def default_deployment_path() -> Path:
    """Where `inferchain devnet up` writes the deployment every other command reads by default."""
    return default_home() / "deployment.json"


class DeploymentError(RuntimeError):
    """A deployment file is missing, malformed, or does not match the chain it points to."""


@dataclass(frozen=True)
class DeploymentParams:
    """Economic parameters fixed at deployment (the owner can change most of them later on-chain).

    The defaults suit a devnet: short delays so a demo sees withdrawals and epochs end.
    """

    min_stake: int = 100 * ONE_TOKEN
    unbonding_delay_s: int = 60
    withdraw_delay_s: int = 60
    epoch_length_s: int = 3600
    fee_bps: int = 500

    def __post_init__(self) -> None:
        if self.epoch_length_s <= 0:
            raise ValueError("epoch_length_s must be positive")
        if not 0 <= self.fee_bps <= 2000:
            raise ValueError("fee_bps must be within [0, 2000]")
        if min(self.min_stake, self.unbonding_delay_s, self.withdraw_delay_s) < 0:
            raise ValueError("parameters must not be negative")


@dataclass(frozen=True)
class Addresses:
    token: str
    reward_pool: str
    staking: str
    escrow: str


@dataclass(frozen=True)
class Contracts:
    """web3 contract objects bound to a deployment."""

    token: Contract
    reward_pool: Contract
    staking: Contract
    escrow: Contract


@dataclass(frozen=True)
class Deployment:
    chain_id: int
    rpc_url: str | None
    addresses: Addresses
    deployer: str
    block: int
    params: DeploymentParams = field(default_factory=DeploymentParams)
    deployed_at: int = 0
    format: int = DEPLOYMENT_FORMAT

    @property
    def receipt_domain(self) -> Domain:
        """EIP-712 domain receipts are signed in (the escrow)."""
        return Domain(self.chain_id, self.addresses.escrow)

    @property
    def verdict_domain(self) -> Domain:
        """EIP-712 domain validator verdicts are signed in (the staking contract)."""
        return Domain(self.chain_id, self.addresses.staking)

    def contracts(self, w3: Web3) -> Contracts:
        def bind(name: str, address: str) -> Contract:
            return w3.eth.contract(address=Web3.to_checksum_address(address), abi=load_artifact(name).abi)

        a = self.addresses
        return Contracts(
            token=bind("InferToken", a.token),
            reward_pool=bind("RewardPool", a.reward_pool),
            staking=bind("NodeStaking", a.staking),
            escrow=bind("PaymentEscrow", a.escrow),
        )

    def check(self, w3: Web3) -> None:
        """Raises DeploymentError unless `w3` is the chain of this deployment and the contracts are there."""
        chain_id = w3.eth.chain_id
        if chain_id != self.chain_id:
            raise DeploymentError(f"deployment is for chain {self.chain_id}, the RPC serves chain {chain_id}")
        for name, address in asdict(self.addresses).items():
            if not w3.eth.get_code(Web3.to_checksum_address(address)):
                raise DeploymentError(f"no contract code at {name} address {address} (chain was reset?)")

    def to_json(self) -> dict[str, Any]:
        return asdict(self)

    @classmethod
    def from_json(cls, data: dict[str, Any]) -> Deployment:
        try:
            if data.get("format") != DEPLOYMENT_FORMAT:
                raise DeploymentError(f"unsupported deployment format {data.get('format')!r}")
            return cls(
                chain_id=int(data["chain_id"]),
                rpc_url=data.get("rpc_url"),
                addresses=Addresses(**data["addresses"]),
                deployer=data["deployer"],
                block=int(data["block"]),
                params=DeploymentParams(**data.get("params", {})),
                deployed_at=int(data.get("deployed_at", 0)),
            )
        except (KeyError, TypeError, ValueError) as exc:
            raise DeploymentError(f"malformed deployment: {exc}") from exc

    def save(self, path: Path) -> Path:
        """Writes the deployment atomically (write to a temp file, then rename)."""
        path.parent.mkdir(parents=True, exist_ok=True)
        tmp = path.with_suffix(path.suffix + ".tmp")
        tmp.write_text(json.dumps(self.to_json(), indent=2) + "\n")
        os.replace(tmp, path)
        return path

    @classmethod
    def load(cls, path: Path) -> Deployment:
        try:
            data = json.loads(path.read_text())
        except FileNotFoundError:
            raise DeploymentError(f"no deployment file at {path}; run `inferchain devnet up`") from None
        except json.JSONDecodeError as exc:
            raise DeploymentError(f"{path} is not valid JSON: {exc}") from exc
        return cls.from_json(data)


def _deploy_one(w3: Web3, deployer: Sender, name: str, *args: Any) -> tuple[str, int]:
    art = load_artifact(name)
    factory = w3.eth.contract(abi=art.abi, bytecode=art.bytecode)
    receipt = send(w3, deployer, factory.constructor(*args), what=f"deploy {name}")
    return str(receipt["contractAddress"]), int(receipt["blockNumber"])


def deploy(
    w3: Web3,
    deployer: Sender,
    params: DeploymentParams | None = None,
    *,
    out: Path | None = None,
    rpc_url: str | None = None,
    progress: Callable[[str], None] | None = None,
) -> Deployment:
    """Deploys and wires the four contracts; the deployer owns them and may mint INFER.

    `out`: where to write the deployment JSON. `rpc_url`: recorded in it (default: the provider's URL).
    `progress`: called with a short description before each step.
    """
    params = params or DeploymentParams()
    say = progress or (lambda _msg: None)
    owner = sender_address(deployer)

    say("deploying InferToken")
    token, first_block = _deploy_one(w3, deployer, "InferToken", owner)
    say("deploying RewardPool")
    pool, _ = _deploy_one(w3, deployer, "RewardPool", token, params.epoch_length_s, owner)
    say("deploying NodeStaking")
    staking, _ = _deploy_one(
        w3, deployer, "NodeStaking", token, pool, params.min_stake, params.unbonding_delay_s, owner
    )
    say("deploying PaymentEscrow")
    escrow, _ = _deploy_one(
        w3, deployer, "PaymentEscrow", token, staking, pool, params.fee_bps, params.withdraw_delay_s, owner
    )

    deployment = Deployment(
        chain_id=w3.eth.chain_id,
        rpc_url=rpc_url if rpc_url is not None else getattr(w3.provider, "endpoint_uri", None),
        addresses=Addresses(token=token, reward_pool=pool, staking=staking, escrow=escrow),
        deployer=owner,
        block=first_block,
        params=params,
        deployed_at=int(time.time()),
    )
    c = deployment.contracts(w3)
    say("wiring contracts")
    send(w3, deployer, c.staking.functions.setReceiptVerifier(escrow))
    send(w3, deployer, c.reward_pool.functions.setEscrow(escrow))
    if out is not None:
        deployment.save(out)
    return deployment


def mint(w3: Web3, deployment: Deployment, owner: Sender, to: str, amount: int) -> None:
    """Mints `amount` token wei to `to` (the deployer owns the token)."""
    token = deployment.contracts(w3).token
    send(w3, owner, token.functions.mint(Web3.to_checksum_address(to), amount), what="mint")
