"""deploy/prometheus: the alert rules load (`promtool check rules`), every rule is unit-tested
firing and quiet (`promtool test rules`), and the dashboard's queries are valid PromQL."""

from __future__ import annotations

import shutil
import subprocess
from pathlib import Path

import pytest
import yaml

from tests.observability import RULE_TESTS, RULES, alert_rules, dashboard_queries

pytestmark = pytest.mark.unit


def promtool(*args: str) -> subprocess.CompletedProcess[str]:
    binary = shutil.which("promtool")
    assert binary, "promtool is missing: scripts/setup.sh installs Debian's prometheus package"
    return subprocess.run([binary, *args], capture_output=True, text=True, timeout=60, check=False)


def test_the_alert_rules_load_in_promtool() -> None:
    done = promtool("check", "rules", str(RULES))
    assert done.returncode == 0, done.stdout + done.stderr
    assert f"SUCCESS: {len(alert_rules())} rules found" in done.stdout


def test_the_alert_rules_pass_their_promtool_unit_tests() -> None:
    done = promtool("test", "rules", str(RULE_TESTS))
    assert done.returncode == 0, done.stdout + done.stderr
    assert "SUCCESS" in done.stdout


def test_every_alert_rule_has_a_test_where_it_fires_and_one_where_it_stays_quiet() -> None:
    doc = yaml.safe_load(RULE_TESTS.read_text())
    cases = [case for test in doc["tests"] for case in test["alert_rule_test"]]
    for rule in alert_rules():
        name = rule["alert"]
        mine = [c for c in cases if c["alertname"] == name]
        assert any(c["exp_alerts"] for c in mine), f"{name} is never shown firing"
        assert any(not c["exp_alerts"] for c in mine), f"{name} is never shown quiet"
        assert rule["labels"]["severity"] in {"page", "warn"}
        assert rule["annotations"]["summary"]


def test_a_broken_rule_test_fails_in_promtool(tmp_path: Path) -> None:
    """The check above can fail: a wrong expectation is reported."""
    (tmp_path / "alerts.yml").write_text(RULES.read_text())
    broken = RULE_TESTS.read_text().replace("severity: page, instance: b1}", "severity: warn}", 1)
    (tmp_path / "alerts.test.yml").write_text(broken)
    done = promtool("test", "rules", str(tmp_path / "alerts.test.yml"))
    assert done.returncode != 0
    assert "FAILED" in done.stdout + done.stderr


def test_every_dashboard_query_is_valid_promql(tmp_path: Path) -> None:
    queries = dashboard_queries()
    assert len(queries) >= 20
    rules = [{"record": f"dashboard:query_{i}", "expr": q} for i, (_, q) in enumerate(queries)]
    path = tmp_path / "dashboard-queries.yml"
    path.write_text(yaml.safe_dump({"groups": [{"name": "dashboard", "rules": rules}]}))
    done = promtool("check", "rules", str(path))
    assert done.returncode == 0, done.stdout + done.stderr
