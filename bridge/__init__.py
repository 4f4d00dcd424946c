"""The bridge: the only writer of device and reservation state.

It subscribes to machine presence and state and to reservation commands, keeps the merged
view of every machine, decides commands, publishes the retained board, events, replies and
notifications, and writes SQL. ``service`` wires the parts; ``presence/`` is the machines'
side, ``reservations/`` the commands' side. See docs/architecture.md.
"""
