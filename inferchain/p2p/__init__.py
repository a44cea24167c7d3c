"""libp2p plumbing shared by nodes, clients and the market: secure host construction (Noise + Yamux only),
persistent peer identities, framed stream I/O, the trio thread that other event loops call into, and the patches
that make py-libp2p's message path cheaper (yamux.py: window credit; hotpath.py: locks, read-ahead, frame writes).

May import wire. Must not import models, node, client, marketplace or wallet.
"""
