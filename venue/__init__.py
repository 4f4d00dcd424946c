"""Operator tooling: the `plaza` CLI, the local broker runner, demo seeding and the supervisor."""
