"""Runs a route: inference sessions through a chain of nodes, generation, sampling and fail-over.

May import models and wire. Never touches the database, never imports node internals or marketplace storage.
"""
