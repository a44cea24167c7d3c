"""Reseller sign-in: an EIP-4361 ("Sign-In with Ethereum") message signed with EIP-191 `personal_sign`.

The gateway hands out a single-use nonce; the reseller's wallet signs a message naming the gateway's domain,
its address, the nonce and an expiry; the gateway checks all of them and the signature, burns the nonce, and
answers a short-lived admin token (stored hashed) for the admin API.
"""

from __future__ import annotations

import re
from dataclasses import dataclass
from datetime import UTC, datetime

from eth_account import Account
from eth_account.messages import encode_defunct
from eth_utils import is_address, to_checksum_address

STATEMENT = "Sign in to administer API keys on this inferchain gateway."


class SignInError(ValueError):
    """The sign-in message or its signature is not acceptable; the text says why."""


@dataclass(frozen=True)
class SignInMessage:
    domain: str
    address: str
    uri: str
    chain_id: int
    nonce: str
    issued_at: float
    expires_at: float

    def text(self) -> str:
        return (
            f"{self.domain} wants you to sign in with your Ethereum account:\n{self.address}\n\n{STATEMENT}\n\n"
            f"URI: {self.uri}\nVersion: 1\nChain ID: {self.chain_id}\nNonce: {self.nonce}\n"
            f"Issued At: {_iso(self.issued_at)}\nExpiration Time: {_iso(self.expires_at)}"
        )


def _iso(t: float) -> str:
    return datetime.fromtimestamp(t, UTC).strftime("%Y-%m-%dT%H:%M:%SZ")


def _time(s: str) -> float:
    try:
        return datetime.strptime(s, "%Y-%m-%dT%H:%M:%SZ").replace(tzinfo=UTC).timestamp()
    except ValueError:
        raise SignInError(f"bad timestamp {s!r}") from None


_PATTERN = re.compile(
    r"^(?P<domain>\S+) wants you to sign in with your Ethereum account:\n(?P<address>0x[0-9a-fA-F]{40})\n\n"
    + re.escape(STATEMENT)
    + r"\n\nURI: (?P<uri>\S+)\nVersion: 1\nChain ID: (?P<chain>\d+)\nNonce: (?P<nonce>[A-Za-z0-9]{8,64})\n"
    r"Issued At: (?P<issued>\S+)\nExpiration Time: (?P<expires>\S+)$"
)


def parse(text: str) -> SignInMessage:
    m = _PATTERN.match(text)
    if m is None:
        raise SignInError("not a sign-in message of this gateway's format (EIP-4361 with an expiration time)")
    if not is_address(m["address"]):
        raise SignInError("bad address")
    return SignInMessage(
        domain=m["domain"], address=to_checksum_address(m["address"]), uri=m["uri"], chain_id=int(m["chain"]),
        nonce=m["nonce"], issued_at=_time(m["issued"]), expires_at=_time(m["expires"]),
    )  # fmt: skip


def verify(text: str, signature: str, domain: str, now: float, max_ttl_s: float = 86400.0) -> SignInMessage:
    """The parsed message if `signature` (EIP-191) is by its address, it names `domain`, and it is current.
    The nonce is the caller's to check and burn."""
    msg = parse(text)
    if msg.domain != domain:
        raise SignInError(f"message is for {msg.domain!r}, not this gateway ({domain!r})")
    if msg.issued_at > now + 300:
        raise SignInError("message issued in the future")
    if msg.expires_at <= now:
        raise SignInError("message expired")
    if msg.expires_at - msg.issued_at > max_ttl_s:
        raise SignInError(f"message valid for more than {max_ttl_s:.0f} s")
    try:
        signer = Account.recover_message(encode_defunct(text=text), signature=signature)
    except Exception as e:  # malformed signature bytes
        raise SignInError(f"unreadable signature: {e}") from None
    if signer != msg.address:
        raise SignInError(f"signature is by {signer}, not {msg.address}")
    return msg


def sign(message: SignInMessage, private_key: str | bytes) -> str:
    """The wallet's side (tests, scripts): EIP-191 signature of the message text, 0x-hex."""
    signed = Account.sign_message(encode_defunct(text=message.text()), private_key=private_key)
    return "0x" + bytes(signed.signature).hex().removeprefix("0x")
