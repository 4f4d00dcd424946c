"""The bridge: the only writer of device and reservation state.

It subscribes to machine presence and state, keeps the merged view of every machine, publishes
the retained board and events, and writes SQL. See docs/architecture.md.
"""
