"""The built dApp committed in the package matches web/ (sources, build configuration and lock file), and the market
serves it at /app with the routes its pages call."""

from __future__ import annotations

import hashlib
import json
import re
import subprocess
from pathlib import Path

import httpx
import pytest

from inferchain.marketplace.webui.mount import STATIC_DIR

ROOT = Path(__file__).resolve().parent.parent
WEB = ROOT / "web"
# The files web/build-info.mjs hashes, besides everything under web/src.
BUILD_FILES = ["index.html", "package.json", "package-lock.json", "vite.config.ts", "tsconfig.json", "build-info.mjs"]


def source_digest() -> str:
    """Python twin of sourceDigest() in web/build-info.mjs."""
    paths = sorted([*BUILD_FILES, *(p.relative_to(WEB).as_posix() for p in (WEB / "src").rglob("*") if p.is_file())])
    h = hashlib.sha256()
    for path in paths:
        h.update(path.encode() + b"\0")
        h.update((WEB / path).read_bytes())
        h.update(b"\0")
    return h.hexdigest()


def test_committed_build_is_made_from_the_current_sources() -> None:
    info = json.loads((STATIC_DIR / "build-info.json").read_text())
    assert info["source_sha256"] == source_digest(), (
        "inferchain/marketplace/webui/static is stale: run `npm run build` in web/ and commit the result"
    )


def test_index_names_only_assets_that_ship() -> None:
    html = (STATIC_DIR / "index.html").read_text()
    assets = re.findall(r'(?:src|href)="/app/(assets/[^"]+)"', html)
    assert any(a.endswith(".js") for a in assets) and any(a.endswith(".css") for a in assets)
    for asset in assets:
        assert (STATIC_DIR / asset).is_file(), asset


def test_every_built_file_is_committed() -> None:
    """A rebuild that is not `git add`ed would serve in this checkout and 404 in a fresh clone."""
    if not (ROOT / ".git").exists():
        pytest.skip("not a git checkout (an installed package)")
    tracked = subprocess.run(
        ["git", "ls-files", "--", str(STATIC_DIR)], cwd=ROOT, capture_output=True, text=True, check=True
    ).stdout.split()
    built = sorted(p.relative_to(ROOT).as_posix() for p in STATIC_DIR.rglob("*") if p.is_file())
    assert built == sorted(tracked), "git add inferchain/marketplace/webui/static after `npm run build` in web/"


def test_market_serves_the_pages_and_their_config(tmp_path: Path) -> None:
    from inferchain.marketplace.book import OfferBook
    from inferchain.marketplace.db import init_db, make_engine
    from inferchain.marketplace.service import MarketState, create_app
    from tests.http_server import serve_app

    engine = make_engine(f"sqlite:///{tmp_path / 'm.sqlite'}")
    model = "sha256:" + "ab" * 32
    server, thread, url = serve_app(create_app(MarketState(OfferBook(init_db(engine), {model: 30}))))
    try:
        with httpx.Client(base_url=url, timeout=10) as http:
            root = http.get("/", follow_redirects=False)
            assert root.status_code in (302, 307) and root.headers["location"] == "/app/"
            page = http.get("/app/")
            assert page.status_code == 200 and '<main id="main"' in page.text
            js = re.search(r'src="(/app/assets/[^"]+\.js)"', page.text)
            assert js is not None and http.get(js.group(1)).status_code == 200
            config = http.get("/app/api/config").json()
            assert config["chain_id"] is None and config["chat"] is False  # free market, no gateway
            assert config["models"] == [{"id": model, "name": model[:15], "layers": 30, "chat": False}]
            network = http.get("/app/api/network").json()
            assert network["models"] == [{"id": model, "layers": 30, "coverage": [0] * 30}] and network["nodes"] == []
            assert http.get("/app/api/operators/0x" + "11" * 20).status_code == 503  # no chain to read
            assert http.get("/app/api/history/not-an-address").status_code == 422
            chat = http.post("/app/api/chats", json={"model": model, "messages": [{"role": "user", "content": "hi"}]})
            assert chat.status_code == 503  # no gateway: no models to run
            sig = http.post("/app/api/chats/nope/signatures", json={"request_id": "x", "signature": "0x" + "00" * 65})
            assert sig.status_code == 404
    finally:
        server.should_exit = True
        thread.join(timeout=10)
