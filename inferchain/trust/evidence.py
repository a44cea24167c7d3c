"""The validator's evidence store (SQLite): what it saw, what it checked, what it signed, what it sent on-chain.

Tables (one file, `validator.sqlite` in the validator's data folder):

- `unreadable`: files that did not parse as evidence (and why), not read again;
- `seen`: every evidence file taken in (name, node, session, span, the receipt's digest and the node's signature),
  so a second, different receipt the node signed for the same session and span is found (equivocation);
- `checks`: each sampled session's outcome (honest / guilty / unverifiable), reason and comparison figures;
- `verdicts`: the guilty verdicts this validator signed;
- `submissions`: each on-chain slash it sent (by verdict quorum or equivocation): offence, tx hash, block, status;
- `payments`: the validation receipts it signed for its work (to be countersigned by the buyer and settled).

Each write commits before the call returns; a restarted validator skips what it already took in.
"""

from __future__ import annotations

import json
import sqlite3
import time
from dataclasses import dataclass
from pathlib import Path
from typing import Any

DB_FILE = "validator.sqlite"
_SCHEMA = """
CREATE TABLE IF NOT EXISTS seen (
    file TEXT PRIMARY KEY, node TEXT NOT NULL, session_id TEXT NOT NULL, span_start INTEGER NOT NULL,
    span_end INTEGER NOT NULL, receipt TEXT NOT NULL, node_signature TEXT NOT NULL, digest TEXT NOT NULL,
    sampled INTEGER NOT NULL, seen_at REAL NOT NULL);
CREATE INDEX IF NOT EXISTS seen_offence ON seen (node, session_id, span_start, span_end);
CREATE TABLE IF NOT EXISTS checks (
    file TEXT PRIMARY KEY, node TEXT NOT NULL, session_id TEXT NOT NULL, outcome TEXT NOT NULL,
    reason TEXT NOT NULL, tokens INTEGER, failed_tokens INTEGER, max_error REAL, median_error REAL,
    seconds REAL NOT NULL, checked_at REAL NOT NULL);
CREATE TABLE IF NOT EXISTS verdicts (
    node TEXT NOT NULL, session_id TEXT NOT NULL, verdict TEXT NOT NULL, signature TEXT NOT NULL,
    signed_at REAL NOT NULL, PRIMARY KEY (node, session_id));
CREATE TABLE IF NOT EXISTS submissions (
    offence TEXT PRIMARY KEY, kind TEXT NOT NULL, node TEXT NOT NULL, session_id TEXT NOT NULL,
    status TEXT NOT NULL, tx_hash TEXT, block INTEGER, signatures INTEGER, error TEXT, at REAL NOT NULL);
CREATE TABLE IF NOT EXISTS unreadable (file TEXT PRIMARY KEY, reason TEXT NOT NULL, at REAL NOT NULL);
CREATE TABLE IF NOT EXISTS payments (
    key TEXT PRIMARY KEY, judged_file TEXT NOT NULL, receipt TEXT NOT NULL, validator_signature TEXT NOT NULL,
    signed_at REAL NOT NULL);
"""


@dataclass(frozen=True)
class SeenReceipt:
    file: str
    receipt: dict[str, Any]
    node_signature: str
    digest: str


class EvidenceStore:
    def __init__(self, path: Path) -> None:
        self.path = path / DB_FILE if path.suffix != ".sqlite" else path
        self.path.parent.mkdir(parents=True, exist_ok=True)
        self._db = sqlite3.connect(self.path, timeout=30, isolation_level=None)
        self._db.execute("PRAGMA journal_mode=WAL")
        self._db.execute("PRAGMA synchronous=FULL")
        self._db.executescript(_SCHEMA)

    def close(self) -> None:
        self._db.close()

    def _write(self, sql: str, params: tuple[Any, ...]) -> None:
        self._db.execute(sql, params)  # autocommit: one statement, one durable transaction

    # -- writes ----------------------------------------------------------------------------------------
    def add_seen(
        self, file: str, receipt: dict[str, Any], node_signature: str, digest: str, sampled: bool
    ) -> list[SeenReceipt]:
        """Records an evidence file; returns earlier receipts of the same node, session and span that differ."""
        others = self.conflicting(receipt, digest)
        self._write(
            "INSERT OR IGNORE INTO seen VALUES (?,?,?,?,?,?,?,?,?,?)",
            (
                file, receipt["node"], receipt["session_id"], receipt["span_start"], receipt["span_end"],
                json.dumps(receipt), node_signature, digest, int(sampled), time.time(),
            ),
        )  # fmt: skip
        return others

    def add_unreadable(self, file: str, reason: str) -> None:
        self._write("INSERT OR REPLACE INTO unreadable VALUES (?,?,?)", (file, reason, time.time()))

    def add_check(self, file: str, node: str, session_id: str, check: Any, seconds: float) -> None:
        c = check.comparison
        self._write(
            "INSERT OR REPLACE INTO checks VALUES (?,?,?,?,?,?,?,?,?,?,?)",
            (
                file, node, session_id, check.outcome, check.reason,
                c.tokens if c else None, c.failed_tokens if c else None,
                c.max_error if c else None, c.median_error if c else None, seconds, time.time(),
            ),
        )  # fmt: skip

    def add_verdict(self, node: str, session_id: str, verdict: dict[str, Any], signature: str) -> None:
        self._write(
            "INSERT OR IGNORE INTO verdicts VALUES (?,?,?,?,?)",
            (node, session_id, json.dumps(verdict), signature, time.time()),
        )

    def add_submission(
        self,
        offence: str,
        kind: str,
        node: str,
        session_id: str,
        status: str,
        tx_hash: str | None = None,
        block: int | None = None,
        signatures: int | None = None,
        error: str | None = None,
    ) -> None:
        self._write(
            "INSERT OR REPLACE INTO submissions VALUES (?,?,?,?,?,?,?,?,?,?)",
            (offence, kind, node, session_id, status, tx_hash, block, signatures, error, time.time()),
        )

    def add_payment(self, key: str, judged_file: str, receipt: dict[str, Any], signature: str) -> None:
        self._write(
            "INSERT OR IGNORE INTO payments VALUES (?,?,?,?,?)",
            (key, judged_file, json.dumps(receipt), signature, time.time()),
        )

    # -- reads -----------------------------------------------------------------------------------------
    def has_seen(self, file: str) -> bool:
        seen = self._db.execute("SELECT 1 FROM seen WHERE file = ?", (file,)).fetchone()
        return seen is not None or bool(self._db.execute("SELECT 1 FROM unreadable WHERE file = ?", (file,)).fetchone())

    def conflicting(self, receipt: dict[str, Any], digest: str) -> list[SeenReceipt]:
        rows = self._db.execute(
            "SELECT file, receipt, node_signature, digest FROM seen "
            "WHERE node = ? AND session_id = ? AND span_start = ? AND span_end = ? AND digest != ? LIMIT 8",
            (receipt["node"], receipt["session_id"], receipt["span_start"], receipt["span_end"], digest),
        ).fetchall()
        return [SeenReceipt(f, json.loads(r), s, d) for f, r, s, d in rows]

    def submission(self, offence: str) -> dict[str, Any] | None:
        row = self._db.execute(
            "SELECT kind, node, session_id, status, tx_hash, block, signatures, error FROM submissions "
            "WHERE offence = ?",
            (offence,),
        ).fetchone()
        if row is None:
            return None
        keys = ("kind", "node", "session_id", "status", "tx_hash", "block", "signatures", "error")
        return dict(zip(keys, row, strict=True))

    def submissions(self) -> list[dict[str, Any]]:
        rows = self._db.execute(
            "SELECT offence, kind, node, session_id, status, tx_hash, block, signatures, error FROM submissions "
            "ORDER BY at"
        ).fetchall()
        keys = ("offence", "kind", "node", "session_id", "status", "tx_hash", "block", "signatures", "error")
        return [dict(zip(keys, r, strict=True)) for r in rows]

    def checks(self) -> list[dict[str, Any]]:
        rows = self._db.execute(
            "SELECT file, node, session_id, outcome, reason, tokens, failed_tokens, max_error, median_error "
            "FROM checks ORDER BY checked_at"
        ).fetchall()
        keys = ("file", "node", "session_id", "outcome", "reason", "tokens", "failed_tokens", "max_error", "median")
        return [dict(zip(keys, r, strict=True)) for r in rows]

    def payments(self) -> list[dict[str, Any]]:
        rows = self._db.execute("SELECT key, judged_file, receipt, validator_signature FROM payments").fetchall()
        return [{"key": k, "file": f, "receipt": json.loads(r), "signature": s} for k, f, r, s in rows]

    def summary(self) -> dict[str, Any]:
        def count(sql: str) -> dict[str, int]:
            return {str(k): int(n) for k, n in self._db.execute(sql).fetchall()}

        seen, sampled = self._db.execute("SELECT COUNT(*), COALESCE(SUM(sampled), 0) FROM seen").fetchone()
        return {
            "seen": int(seen),
            "sampled": int(sampled),
            "checks": count("SELECT outcome, COUNT(*) FROM checks GROUP BY outcome"),
            "verdicts_signed": int(self._db.execute("SELECT COUNT(*) FROM verdicts").fetchone()[0]),
            "submissions": count("SELECT kind || ':' || status, COUNT(*) FROM submissions GROUP BY 1"),
            "payments": int(self._db.execute("SELECT COUNT(*) FROM payments").fetchone()[0]),
        }
