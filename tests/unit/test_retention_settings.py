"""Retention settings that must agree with each other."""

from __future__ import annotations

import pytest

from plaza.settings import Settings

pytestmark = pytest.mark.unit


def test_a_rest_idempotency_key_is_remembered_as_long_as_the_bridge_answers_its_retry() -> None:
    """A key reused with another body past the api's TTL but inside the command log's
    retention would be answered with the first result, silently (issue 13, finding 13)."""
    settings = Settings()
    assert settings.idempotency_ttl >= settings.command_log_retention
