"""Gateway accounts without nodes: API keys (hashes, constant-time check, revoke/rotate), reserve-then-settle
quotas under concurrent bursts on SQLite and on a real PostgreSQL server, and reseller sign-in over HTTP."""

from __future__ import annotations

import threading
import time
from collections.abc import Iterator
from pathlib import Path

import httpx
import pytest
from eth_account import Account
from sqlalchemy import select

from inferchain.marketplace.db import make_engine
from inferchain.marketplace.gateway import siwe
from inferchain.marketplace.gateway.db import ApiKeyRow, UsageRow, init_gateway_db
from inferchain.marketplace.gateway.keys import KeyStore, Limits
from inferchain.marketplace.gateway.metering import Meter, QuotaExceeded
from inferchain.marketplace.gateway.runner import Runners, static_peers
from inferchain.marketplace.gateway.state import Gateway
from inferchain.marketplace.service import MarketState, create_app
from tests.http_server import serve_app

REPO = Path(__file__).resolve().parents[1]
RESELLER = "0x" + "11" * 20


def test_keys_are_hashed_checked_revoked_and_rotated(database_url: str) -> None:
    engine = make_engine(database_url)
    try:
        keys = KeyStore(init_gateway_db(engine))
        info, key = keys.create(RESELLER, "alice", Limits(tokens_per_day=100))
        assert key.startswith(f"ick_{info.id}_") and keys.authenticate(key) == info
        with keys.sessions() as s:
            stored = s.scalars(select(ApiKeyRow)).one()
            assert key.split("_", 2)[2] not in stored.secret_sha256 and len(stored.secret_sha256) == 64
        assert keys.authenticate(key[:-1] + ("A" if key[-1] != "A" else "B")) is None  # one character off
        assert keys.authenticate("ick_000000000000_" + key.split("_", 2)[2]) is None  # unknown id
        assert keys.authenticate("not a key") is None
        rotated = keys.rotate(RESELLER, info.id)
        assert rotated is not None
        assert keys.authenticate(key) is None and keys.authenticate(rotated[1]) is not None  # old secret dead now
        assert keys.rotate("0x" + "22" * 20, info.id) is None  # another reseller's key
        keys.revoke(RESELLER, info.id)
        assert keys.authenticate(rotated[1]) is None and keys.rotate(RESELLER, info.id) is None
    finally:
        engine.dispose()


def test_concurrent_burst_cannot_overspend(database_url: str) -> None:
    """32 threads reserve 10 tokens each against 100 tokens per day: exactly 10 pass; settling below the
    reservation frees the difference; a failed request counts nothing."""
    engine = make_engine(database_url)
    try:
        sessions = init_gateway_db(engine)
        keys, meter = KeyStore(sessions), Meter(sessions)
        info, _ = keys.create(RESELLER, limits=Limits(tokens_per_day=100, spend_per_month=1000))
        barrier, passed, refused = threading.Barrier(32), [], []

        def burst(i: int) -> None:
            barrier.wait(timeout=30)
            try:
                passed.append(meter.reserve(f"r{i}", info.id, "m", tokens=10, spend=10))
            except QuotaExceeded as e:
                refused.append(e.kind)

        threads = [threading.Thread(target=burst, args=(i,)) for i in range(32)]
        for t in threads:
            t.start()
        for t in threads:
            t.join(timeout=60)
        assert len(passed) == 10 and refused == ["tokens_per_day"] * 22
        meter.settle(passed[0], 3, 2, spend=5, price_per_1k=1000, route=[], receipts=[])  # used 5 of 10
        meter.release(passed[1], "no route")  # used nothing
        meter.reserve("again", info.id, "m", tokens=15, spend=15)  # 5 + 10 freed
        with pytest.raises(QuotaExceeded) as e:
            meter.reserve("over", info.id, "m", tokens=1, spend=1)
        assert e.value.kind == "tokens_per_day"
        meter.settle(passed[0], 99, 99, 99, 0, [], [])  # a second settle of one reservation changes nothing
        with sessions() as s:
            row = s.get(UsageRow, passed[0].id)
            assert row is not None and (row.prompt_tokens, row.completion_tokens, row.spend) == (3, 2, 5)
    finally:
        engine.dispose()


def test_spend_and_rate_limits(tmp_path: Path) -> None:
    engine = make_engine(f"sqlite:///{tmp_path / 'g.sqlite'}")
    try:
        sessions = init_gateway_db(engine)
        keys, meter = KeyStore(sessions), Meter(sessions)
        spend_key, _ = keys.create(RESELLER, limits=Limits(spend_per_month=100))
        meter.reserve("a", spend_key.id, "m", tokens=1, spend=60)
        with pytest.raises(QuotaExceeded) as e:
            meter.reserve("b", spend_key.id, "m", tokens=1, spend=41)
        assert e.value.kind == "spend_per_month" and "40" in e.value.message
        rate_key, _ = keys.create(RESELLER, limits=Limits(requests_per_minute=2))
        meter.reserve("c", rate_key.id, "m", 1, 0)
        meter.reserve("d", rate_key.id, "m", 1, 0)
        with pytest.raises(QuotaExceeded) as e:
            meter.reserve("e", rate_key.id, "m", 1, 0)
        assert e.value.kind == "rate" and e.value.retry_after_s is not None and 0 < e.value.retry_after_s <= 60
    finally:
        engine.dispose()


# ----- reseller sign-in and admin API over HTTP -----------------------------------------------------------


@pytest.fixture(scope="module")
def admin_api(tmp_path_factory: pytest.TempPathFactory) -> Iterator[tuple[str, Gateway]]:
    from inferchain.marketplace.book import OfferBook
    from inferchain.marketplace.db import init_db

    path = tmp_path_factory.mktemp("gw") / "market.sqlite"
    engine = make_engine(f"sqlite:///{path}")
    runners = Runners([], static_peers([]))
    gateway = Gateway(init_gateway_db(engine), runners, domain="gateway.test")
    server, thread, url = serve_app(create_app(MarketState(OfferBook(init_db(engine), {})), gateway))
    try:
        yield url, gateway
    finally:
        server.should_exit = True
        thread.join(timeout=10)
        runners.close()
        engine.dispose()


def _login(http: httpx.Client, account, domain: str = "gateway.test", ttl: float = 600, **over) -> httpx.Response:
    n = http.get("/admin/nonce").json()
    now = time.time()
    fields = {"domain": domain, "address": account.address, "uri": "https://gateway.test", "chain_id": n["chain_id"],
              "nonce": n["nonce"], "issued_at": now, "expires_at": now + ttl} | over  # fmt: skip
    msg = siwe.SignInMessage(**fields)
    return http.post("/admin/login", json={"message": msg.text(), "signature": siwe.sign(msg, account.key)})


def test_admin_sign_in_and_keys(admin_api) -> None:
    url, _ = admin_api
    alice, mallory = Account.create(), Account.create()
    with httpx.Client(base_url=url, timeout=10) as http:
        assert http.get("/admin/keys").status_code == 401
        r = _login(http, alice)
        assert r.status_code == 200 and r.json()["address"] == alice.address
        auth = {"authorization": f"Bearer {r.json()['token']}"}
        created = http.post("/admin/keys", json={"name": "c1", "tokens_per_day": 50}, headers=auth)
        assert created.status_code == 201 and created.json()["key"].startswith("ick_")
        kid = created.json()["id"]
        listed = http.get("/admin/keys", headers=auth).json()
        assert [k["id"] for k in listed] == [kid] and "key" not in listed[0]  # shown once only
        limits = http.put(f"/admin/keys/{kid}/limits", json={"requests_per_minute": 5}, headers=auth).json()
        assert limits["requests_per_minute"] == 5 and limits["tokens_per_day"] is None
        assert http.post(f"/admin/keys/{kid}/rotate", headers=auth).json()["key"] != created.json()["key"]
        # another reseller sees none of alice's keys and cannot touch them
        other = {"authorization": f"Bearer {_login(http, mallory).json()['token']}"}
        assert http.get("/admin/keys", headers=other).json() == []
        assert http.delete(f"/admin/keys/{kid}", headers=other).status_code == 404
        assert http.delete(f"/admin/keys/{kid}", headers=auth).json()["revoked_at"] is not None
        assert http.get("/admin/usage", headers=auth).json()["requests"] == 0


def test_admin_sign_in_refusals(admin_api) -> None:
    url, _ = admin_api
    alice, mallory = Account.create(), Account.create()
    with httpx.Client(base_url=url, timeout=10) as http:
        assert "not this gateway" in _login(http, alice, domain="evil.test").json()["detail"]
        assert "expired" in _login(http, alice, ttl=-5).json()["detail"]
        assert "more than" in _login(http, alice, ttl=10 * 86400).json()["detail"]
        assert "chain id" in _login(http, alice, chain_id=1).json()["detail"]
        assert "nonce" in _login(http, alice, nonce="deadbeefdeadbeef").json()["detail"]
        # a signature by another wallet than the message names
        n = http.get("/admin/nonce").json()
        now = time.time()
        msg = siwe.SignInMessage("gateway.test", alice.address, "https://gateway.test", n["chain_id"],
                                 n["nonce"], now, now + 60)  # fmt: skip
        r = http.post("/admin/login", json={"message": msg.text(), "signature": siwe.sign(msg, mallory.key)})
        assert r.status_code == 401 and "not " + alice.address in r.json()["detail"]
        # a replayed (used) nonce
        sig = siwe.sign(msg, alice.key)
        assert http.post("/admin/login", json={"message": msg.text(), "signature": sig}).status_code == 200
        replay = http.post("/admin/login", json={"message": msg.text(), "signature": sig})
        assert replay.status_code == 401 and "nonce" in replay.json()["detail"]
        assert http.get("/admin/keys", headers={"authorization": "Bearer forged"}).status_code == 401
