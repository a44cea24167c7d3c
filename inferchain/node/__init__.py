"""Span server: loads a span, hosts a libp2p peer, keeps inference sessions with their KV caches.

May import models, wire, p2p and wallet (to sign offers and receipts). Keeps its own receipt store; never touches
the marketplace's database, never imports client or marketplace.
"""
