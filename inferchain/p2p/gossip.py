"""Gossipsub on a running host: one offer topic per model, over which nodes announce what they serve.

Gossipsub signs every message with the sender's peer key (strict signing), so a receiver knows which peer
published an announcement; it still checks that the announcement names that same peer.
"""

from __future__ import annotations

from collections.abc import AsyncIterator
from contextlib import asynccontextmanager

from libp2p.abc import IHost
from libp2p.pubsub.gossipsub import PROTOCOL_ID as GOSSIPSUB_PROTOCOL_ID
from libp2p.pubsub.gossipsub import GossipSub
from libp2p.pubsub.pubsub import Pubsub
from libp2p.tools.anyio_service import background_trio_service

OFFER_TOPIC_PREFIX = "/inferchain/offers/1/"
MAX_RELAYED_PER_S = 1000.0


def offer_topic(model_id: str) -> str:
    return OFFER_TOPIC_PREFIX + model_id


@asynccontextmanager
async def running_pubsub(host: IHost, heartbeat_s: int = 1) -> AsyncIterator[Pubsub]:
    """Start gossipsub on `host` (before dialing peers, so that new connections join the mesh)."""
    router = GossipSub(
        protocols=[GOSSIPSUB_PROTOCOL_ID],
        degree=6,
        degree_low=4,
        degree_high=12,
        heartbeat_interval=heartbeat_s,
        # A mesh neighbour relays every node's announcements of a model: with N nodes announcing every T seconds
        # that is N/T messages per second from one peer, far above py-libp2p's default of 10.
        max_messages_per_topic_per_second=MAX_RELAYED_PER_S,
    )
    pubsub = Pubsub(host, router)
    async with background_trio_service(pubsub), background_trio_service(router):
        await pubsub.wait_until_ready()
        yield pubsub
