"""Simulated game machines: N machines in one asyncio process, each its own MQTT connection.

The simulator imports only the wire contract (plaza.topics, plaza.messages), as real firmware
would know only the protocol.
"""
