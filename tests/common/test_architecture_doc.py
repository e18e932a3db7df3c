"""docs/ARCHITECTURE.md is kept true to the code: its event catalogue is the one events.py makes,
the alert rules in deploy/ watch series the API really serves, and README points only inside
the repository."""

from __future__ import annotations

import re
from pathlib import Path

import yaml

from envstore.common import bus_permissions
from envstore.common.event_catalogue import BEGIN, END, catalogue_markdown

ROOT = Path(__file__).resolve().parents[2]


def test_the_architecture_document_holds_the_catalogue_events_py_makes() -> None:
    document = (ROOT / "docs" / "ARCHITECTURE.md").read_text()
    start, end = document.index(BEGIN), document.index(END) + len(END)
    assert document[start:end] == catalogue_markdown(), (
        "the event catalogue in docs/ARCHITECTURE.md is stale: "
        "replace it with the output of `python -m envstore.common.event_catalogue`"
    )


def test_the_architecture_document_holds_the_bus_permissions_the_code_grants() -> None:
    document = (ROOT / "docs" / "ARCHITECTURE.md").read_text()
    start = document.index(bus_permissions.BEGIN)
    end = document.index(bus_permissions.END) + len(bus_permissions.END)
    assert document[start:end] == bus_permissions.permissions_markdown(), (
        "the bus permissions in docs/ARCHITECTURE.md are stale: "
        "replace them with the output of `python -m envstore.common.bus_permissions`"
    )


def test_readme_and_docs_point_only_inside_the_repository() -> None:
    for path in [ROOT / "README.md", *sorted((ROOT / "docs").glob("*.md"))]:
        text = path.read_text()
        assert "../shared" not in text, f"{path.name} points outside the repository"
        for target in re.findall(r"\]\(([^)#]+)(?:#[^)]*)?\)", text):
            if "://" in target:
                continue
            assert (path.parent / target).exists(), f"{path.name} links to {target}, which does not exist"


def test_the_alert_rules_watch_series_the_api_serves() -> None:
    rules = yaml.safe_load((ROOT / "deploy" / "prometheus-alerts.yml").read_text())
    metrics_route = (ROOT / "services" / "api" / "routes" / "metrics.py").read_text()
    expressions = [rule["expr"] for group in rules["groups"] for rule in group["rules"]]
    assert any("envstore_projection_stalled" in expression for expression in expressions)
    for expression in expressions:
        for series in re.findall(r"\benvstore_[a-z_]+", expression):
            assert f"{series} " in metrics_route or f'"{series}' in metrics_route, f"{series} is not served"
    prometheus = yaml.safe_load((ROOT / "deploy" / "prometheus.yml").read_text())
    assert "/etc/prometheus/envstore-alerts.yml" in prometheus["rule_files"]
