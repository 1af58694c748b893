"""docs/ show exactly the tables the code generates (the monitor user's rights, the alerts)."""

from __future__ import annotations

from cachelayer.plan.acl_policy import monitor_markdown_table
from cachelayer.render.monitoring import alerts_markdown
from support.repo import REPO_ROOT


def test_security_and_monitoring_docs_show_the_monitor_rights() -> None:
    for page in ("security.md", "monitoring.md"):
        assert monitor_markdown_table() in (REPO_ROOT / "docs" / page).read_text(), page


def test_monitoring_doc_shows_the_generated_alert_table() -> None:
    assert alerts_markdown() in (REPO_ROOT / "docs" / "monitoring.md").read_text()
