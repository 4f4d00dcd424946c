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


def test_the_status_history_covers_a_month_beside_the_same_month_a_year_before() -> None:
    """The occupancy heatmap (issue 18) reads the status history."""
    assert Settings().status_history_retention >= (365 + 31) * 86400


def test_plaza_check_reads_notifications_only_while_their_sent_rows_are_kept() -> None:
    settings = Settings()
    assert settings.outbox_sent_retention - 3600 >= 0.5 * 86400
