"""inferchain: a peer-to-peer market for LLM inference.

Rooms: models (span math), wire (peer protocol), node (span server), client (runs a route),
marketplace (offers, planner, gateway), wallet (keys and the chain), cli (the `inferchain` command).
"""

__version__ = "0.1.0"
