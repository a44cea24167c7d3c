"""An in-process EVM (eth-tester on py-evm) with the contracts deployed: for tests and offline demos.

No process, no port: `in_process_chain()` returns a `Chain` whose unlocked accounts (`w3.eth.accounts`) hold
ETH; the first one deployed the contracts and may mint INFER.
"""

from __future__ import annotations

from eth_account import Account
from eth_account.signers.local import LocalAccount
from web3 import Web3
from web3.types import Wei

from inferchain.wallet.chain import Chain
from inferchain.wallet.deployment import ONE_TOKEN, DeploymentParams, deploy, mint


def in_process_web3() -> Web3:
    """A Web3 on a fresh eth-tester chain (py-evm backend, latest fork)."""
    from web3 import EthereumTesterProvider

    return Web3(EthereumTesterProvider())


def in_process_chain(params: DeploymentParams | None = None) -> Chain:
    """A fresh in-process chain with the inferchain contracts deployed by `w3.eth.accounts[0]`."""
    w3 = in_process_web3()
    deployment = deploy(w3, w3.eth.accounts[0], params, rpc_url=None)
    return Chain(w3, deployment)


def funded_account(chain: Chain, tokens: int = 1_000 * ONE_TOKEN, eth: int = 10**18) -> LocalAccount:
    """A new local key with `eth` wei for gas and `tokens` INFER wei (minted by the deployer)."""
    account: LocalAccount = Account.create()
    w3 = chain.w3
    owner = chain.deployment.deployer
    tx = w3.eth.send_transaction({"from": owner, "to": account.address, "value": Wei(eth)})
    w3.eth.wait_for_transaction_receipt(tx, timeout=30)
    if tokens:
        mint(w3, chain.deployment, owner, account.address, tokens)
    return account


__all__ = ["in_process_web3", "in_process_chain", "funded_account"]
