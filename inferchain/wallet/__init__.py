"""Keys and the chain: keystores, EIP-712 signing, contract bindings (web3.py), deployment, local devnet.

The only room that talks to the chain. Must not import node, client or marketplace.
"""
