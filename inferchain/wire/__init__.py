"""The peer protocol: message schema, tensor encoding, framing, versioning and size limits.

Imports nothing else of the project (only numpy, msgpack, pydantic), so that any peer can speak it.
"""
