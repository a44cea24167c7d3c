"""Named wallets: one encrypted keystore file (eth-account, Web3 Secret Storage v3, scrypt) per wallet.

Files live in `$INFERCHAIN_HOME/wallets/NAME.json` with mode 0600 inside a 0700 folder. A key is only ever
decrypted in memory, with the passphrase; nothing here prints or logs it.
"""

from __future__ import annotations

import json
import os
import re
from dataclasses import dataclass
from pathlib import Path
from typing import Any

from eth_account import Account
from eth_account.signers.local import LocalAccount
from eth_utils import to_checksum_address

from inferchain.wallet.deployment import default_home

#: scrypt cost (N). eth-account's default; `INFERCHAIN_SCRYPT_N` lowers it for tests (never in production).
SCRYPT_N = 2**18
DEFAULT_DERIVATION_PATH = "m/44'/60'/0'/0/0"
_NAME = re.compile(r"^[A-Za-z0-9][A-Za-z0-9_.-]{0,63}$")


class WalletError(RuntimeError):
    """A wallet operation failed; the message says which wallet and why, never the key."""


class UnknownWallet(WalletError):
    pass


class WalletExists(WalletError):
    pass


class WrongPassphrase(WalletError):
    pass


class CorruptKeystore(WalletError):
    pass


def default_wallet_dir() -> Path:
    return default_home() / "wallets"


def _scrypt_n() -> int:
    raw = os.environ.get("INFERCHAIN_SCRYPT_N")
    if not raw:
        return SCRYPT_N
    n = int(raw)
    if n < 2 or n & (n - 1):
        raise WalletError(f"INFERCHAIN_SCRYPT_N must be a power of two, got {raw}")
    return n


@dataclass(frozen=True)
class WalletInfo:
    name: str
    address: str
    path: Path

    def to_json(self) -> dict[str, Any]:
        return {"name": self.name, "address": self.address, "path": str(self.path)}


def _check_keystore(data: Any, path: Path) -> str:
    """The checksummed address of a v3 keystore document, or CorruptKeystore naming what is wrong."""
    if not isinstance(data, dict):
        raise CorruptKeystore(f"{path} is not a keystore (expected a JSON object)")
    if data.get("version") != 3:
        raise CorruptKeystore(f"{path} is not a version 3 Ethereum keystore (version {data.get('version')!r})")
    crypto = data.get("crypto") or data.get("Crypto")
    if not isinstance(crypto, dict) or not {"cipher", "ciphertext", "kdf", "kdfparams", "mac"} <= set(crypto):
        raise CorruptKeystore(f"{path} is missing keystore fields (cipher, ciphertext, kdf, kdfparams, mac)")
    if crypto.get("kdf") not in ("scrypt", "pbkdf2"):
        raise CorruptKeystore(f"{path} uses an unknown key derivation {crypto.get('kdf')!r}")
    try:
        return str(to_checksum_address(data.get("address", "")))
    except (ValueError, TypeError):
        raise CorruptKeystore(f"{path} records no valid address") from None


class Keystore:
    """The wallets in one folder."""

    def __init__(self, folder: Path | None = None) -> None:
        self.folder = (folder or default_wallet_dir()).expanduser()

    def path(self, name: str) -> Path:
        if not _NAME.match(name):
            raise WalletError(
                f"invalid wallet name {name!r}: use letters, digits, '.', '_' or '-' (at most 64, no leading dot)"
            )
        return self.folder / f"{name}.json"

    def _read(self, name: str) -> tuple[dict[str, Any], WalletInfo]:
        path = self.path(name)
        try:
            data = json.loads(path.read_text())
        except FileNotFoundError:
            known = ", ".join(w.name for w in self.list()) or "none"
            raise UnknownWallet(
                f"no wallet named {name!r} (known: {known}); create one with `inferchain wallet create`"
            ) from None
        except (json.JSONDecodeError, UnicodeDecodeError) as exc:
            raise CorruptKeystore(
                f"{path} is not valid JSON ({exc.__class__.__name__}); the keystore is damaged"
            ) from None
        return data, WalletInfo(name, _check_keystore(data, path), path)

    def list(self) -> list[WalletInfo]:
        """Every wallet in the folder (damaged files are listed with address '?')."""
        out: list[WalletInfo] = []
        if not self.folder.is_dir():
            return out
        for path in sorted(self.folder.glob("*.json")):
            try:
                address = _check_keystore(json.loads(path.read_text()), path)
            except (CorruptKeystore, json.JSONDecodeError, UnicodeDecodeError, OSError):
                address = "?"
            out.append(WalletInfo(path.stem, address, path))
        return out

    def info(self, name: str) -> WalletInfo:
        return self._read(name)[1]

    def _write(self, name: str, account: LocalAccount, passphrase: str) -> WalletInfo:
        if not passphrase:
            raise WalletError("the passphrase must not be empty")
        path = self.path(name)
        if path.exists():
            raise WalletExists(f"a wallet named {name!r} already exists ({path}); remove it first or pick another name")
        for other in self.list():
            if other.address == account.address:
                raise WalletExists(f"this key is already stored as wallet {other.name!r} ({other.address})")
        self.folder.mkdir(parents=True, exist_ok=True, mode=0o700)
        os.chmod(self.folder, 0o700)
        document = Account.encrypt(account.key, passphrase, kdf="scrypt", iterations=_scrypt_n())
        tmp = path.with_suffix(".json.tmp")
        fd = os.open(tmp, os.O_WRONLY | os.O_CREAT | os.O_TRUNC, 0o600)
        with os.fdopen(fd, "w") as f:
            json.dump(document, f)
            f.flush()
            os.fsync(f.fileno())
        os.chmod(tmp, 0o600)
        os.replace(tmp, path)
        return WalletInfo(name, str(account.address), path)

    def create(self, name: str, passphrase: str) -> WalletInfo:
        """A new random key, encrypted under `passphrase`."""
        self.path(name)  # validate the name before spending entropy
        return self._write(name, Account.create(), passphrase)

    def import_private_key(self, name: str, private_key: str, passphrase: str) -> WalletInfo:
        try:
            account = Account.from_key(private_key.strip())
        except (ValueError, TypeError) as exc:
            raise WalletError(
                f"not a valid private key (expected 32 bytes as 64 hex digits): {type(exc).__name__}"
            ) from None
        return self._write(name, account, passphrase)

    def import_mnemonic(
        self, name: str, mnemonic: str, passphrase: str, derivation_path: str = DEFAULT_DERIVATION_PATH
    ) -> WalletInfo:
        Account.enable_unaudited_hdwallet_features()
        try:
            account = Account.from_mnemonic(" ".join(mnemonic.split()), account_path=derivation_path)
        except Exception as exc:  # eth-account raises ValidationError / ValueError for bad phrases
            raise WalletError(f"not a valid BIP-39 mnemonic or derivation path: {exc}") from None
        return self._write(name, account, passphrase)

    def unlock(self, name: str, passphrase: str) -> LocalAccount:
        """The wallet's account, decrypted. WrongPassphrase if the MAC does not match."""
        data, info = self._read(name)
        try:
            key = Account.decrypt(data, passphrase)
        except ValueError as exc:
            if "MAC mismatch" in str(exc):
                raise WrongPassphrase(f"wrong passphrase for wallet {name!r}") from None
            raise CorruptKeystore(f"{info.path} cannot be decrypted: {exc}") from None
        except (KeyError, TypeError) as exc:
            raise CorruptKeystore(f"{info.path} is damaged ({type(exc).__name__}: {exc})") from None
        account: LocalAccount = Account.from_key(key)
        if account.address != info.address:
            raise CorruptKeystore(f"{info.path} decrypts to {account.address}, but records {info.address}")
        return account

    def remove(self, name: str) -> WalletInfo:
        """Deletes the wallet's file (a damaged one too). The key is gone unless exported first."""
        path = self.path(name)
        try:
            info = self.info(name)
        except CorruptKeystore:
            info = WalletInfo(name, "?", path)
        path.unlink()
        return info
