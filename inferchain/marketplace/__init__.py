"""The market: offer book, route planner (max cost / max latency), gateway API, dApp and settlement.

May import wire, client and wallet. The planner itself is pure: no networking, no database, no chain.
"""
