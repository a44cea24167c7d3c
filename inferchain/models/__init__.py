"""Model families: load only layers a..b of a model, embed tokens, run a span of decoder layers, apply the head.

Owns model folders, content hashes, family adapters, the decode step, linear kernels, int8 weights (and their native
one-row kernel, int8_kernel.cpp) and a session's KV cache. Must not import wire, node, client, marketplace or wallet:
it knows no networking and no chain.
"""
