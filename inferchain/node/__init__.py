"""Span server: loads a span, hosts a libp2p peer, keeps inference sessions with their KV caches.

May import models and wire. Never touches a database of the marketplace, never imports client or marketplace.
"""
