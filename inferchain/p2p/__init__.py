"""libp2p plumbing shared by nodes, clients and the market: secure host construction (Noise + Yamux only),
persistent peer identities, framed stream I/O, and the trio thread that other event loops call into.

May import wire. Must not import models, node, client, marketplace or wallet.
"""
