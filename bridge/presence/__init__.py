"""Machines: presence and state in, the live board out, SQL behind (see docs/architecture.md).

- :mod:`~bridge.presence.tracker`: PresenceTracker, pure (epochs, fencing, effects)
- :mod:`~bridge.presence.board`: DeviceView and its board entry, pure
- :mod:`~bridge.presence.handler`: presence/state messages -> tracker -> publish + store
- :mod:`~bridge.presence.store`: DeviceStore, the machines' rows written behind the publish
- :mod:`~bridge.presence.boards`: BoardRefresher, a machine's current and next slot on its board
- :mod:`~bridge.presence.outages`: OutageWatch, a machine down while someone holds it
"""
