"""Model families: load only layers a..b of a model, embed tokens, run a span of decoder layers, apply the head.

Owns model folders, content hashes and family adapters. Must not import wire, node, client, marketplace or wallet:
it knows no networking and no chain.
"""
