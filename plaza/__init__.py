"""GamePlaza shared contract: topics, wire messages, settings, tables and database setup.

This package has no process of its own; the bridge, the api and the simulator import it.
``topics`` and ``messages`` import neither sqlmodel nor aiomqtt, so firmware-like code can
depend on them alone.
"""
