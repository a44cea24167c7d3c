"""The buyer gateway: an OpenAI-compatible API over the market, reseller API keys, quotas, metering.

Part of the marketplace room: may import client, wallet and the market's book; nodes never import it.
"""
