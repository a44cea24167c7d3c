"""Inference sessions on a node: one KV cache each, bounded in number, length, memory and idle time."""

from __future__ import annotations

import time
from dataclasses import dataclass, field
from typing import Any

from inferchain.wire.errors import ErrorCode, WireError
from inferchain.wire.tensors import WireDType


@dataclass(frozen=True)
class SessionLimits:
    max_sessions: int = 16
    max_length: int = 2048  # tokens (prompt + generated) one session may hold
    cache_budget_bytes: int = 512 * 1024 * 1024  # KV memory all sessions together may reserve
    idle_timeout_s: float = 300.0


@dataclass
class Session:
    session_id: str
    peer: str
    start: int
    end: int
    dtype: WireDType
    max_length: int
    reserved_bytes: int
    cache: Any
    position: int = 0
    tokens: int = 0  # tokens forwarded through the span (prompt + generated, replays included)
    last_active: float = field(default_factory=time.monotonic)
    closed_reason: ErrorCode | None = None

    def check_usable(self) -> None:
        if self.closed_reason is not None:
            what = "expired after being idle" if self.closed_reason == ErrorCode.SESSION_EXPIRED else "closed"
            raise WireError(self.closed_reason, f"session {self.session_id} {what}")


class SessionTable:
    """All live sessions of one node. Opening reserves a session's whole maximum cache up front, so a node that
    accepted a session can always finish it, and a full node refuses new ones instead of running out of memory."""

    def __init__(self, limits: SessionLimits, cache_bytes_per_layer_token: int) -> None:
        self.limits = limits
        self.bytes_per_layer_token = cache_bytes_per_layer_token
        self._sessions: dict[int, Session] = {}
        self._next = 0

    @property
    def reserved_bytes(self) -> int:
        return sum(s.reserved_bytes for s in self._sessions.values())

    def __len__(self) -> int:
        return len(self._sessions)

    def free_cache_tokens(self) -> int:
        """Tokens a new session over one layer could still reserve (divide by the layers it asks for)."""
        return max(0, (self.limits.cache_budget_bytes - self.reserved_bytes) // self.bytes_per_layer_token)

    def open(
        self, session_id: str, peer: str, layers: tuple[int, int], dtype: WireDType, max_length: int, new_cache: Any
    ) -> tuple[int, Session]:
        if max_length > self.limits.max_length:
            raise WireError(
                ErrorCode.TOO_LONG,
                f"max_length {max_length} exceeds this node's limit of {self.limits.max_length} tokens",
            )
        if len(self._sessions) >= self.limits.max_sessions:
            raise WireError(ErrorCode.NODE_FULL, f"all {self.limits.max_sessions} session slots are taken")
        num_layers = layers[1] - layers[0]
        need = max_length * num_layers * self.bytes_per_layer_token
        if self.reserved_bytes + need > self.limits.cache_budget_bytes:
            raise WireError(
                ErrorCode.NODE_FULL,
                f"not enough cache memory for {max_length} tokens over {num_layers} layers: "
                f"{self.free_cache_tokens() // num_layers} tokens free",
            )
        self._next += 1
        session = Session(session_id, peer, layers[0], layers[1], dtype, max_length, need, new_cache(max_length))
        self._sessions[self._next] = session
        return self._next, session

    def release(self, handle: int) -> None:
        session = self._sessions.pop(handle, None)
        if session is not None:
            session.cache = None

    def expire_idle(self, now: float | None = None) -> int:
        now = time.monotonic() if now is None else now
        expired = [h for h, s in self._sessions.items() if now - s.last_active > self.limits.idle_timeout_s]
        for handle in expired:
            self._sessions[handle].closed_reason = ErrorCode.SESSION_EXPIRED
            self.release(handle)
        return len(expired)
