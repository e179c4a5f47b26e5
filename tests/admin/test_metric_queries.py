"""Dashboard and alert queries name only metrics the project exports.

Exported names come from the operator's registry (llmops.metrics.Metrics), the vLLM-compatible
server's registry (llmops_runtime.serve.standin.Metrics) and the kube-state-metrics
custom-resource-state config shipped in manifests/alerts/. Queries are parsed with a small PromQL
lexer that keeps series selectors and drops functions, keywords, labels, ranges and strings.
"""

from __future__ import annotations

import json
import pathlib
import re

import pytest
import yaml
from llmops.metrics import Metrics
from llmops_runtime.serve.standin import Metrics as ServerMetrics

ROOT = pathlib.Path(__file__).resolve().parents[2]
DASHBOARD = ROOT / "manifests" / "dashboards" / "llmops.json"
RULES = ROOT / "manifests" / "alerts" / "prometheusrule.yaml"
KSM = ROOT / "manifests" / "alerts" / "kube-state-metrics-llmops.yaml"

KEYWORDS = {"by", "without", "on", "ignoring", "group_left", "group_right", "bool", "offset", "and", "or", "unless", "inf", "nan"}
SUFFIXES = {"counter": ("_total", "_created"), "histogram": ("_bucket", "_sum", "_count", "_created"),
            "gauge": ("",), "summary": ("", "_sum", "_count", "_created")}


def series_names(registry) -> set[str]:
    names: set[str] = set()
    for family in registry.collect():
        names.update(family.name + s for s in SUFFIXES.get(family.type, ("",)))
    return names


def ksm_names() -> set[str]:
    cfg = yaml.safe_load(KSM.read_text())
    return {f"{r.get('metricNamePrefix', 'kube_customresource')}_{m['name']}"
            for r in cfg["spec"]["resources"] for m in r["metrics"]}


def exported() -> set[str]:
    return series_names(Metrics().registry) | series_names(ServerMetrics("m").registry) | ksm_names()


def metric_names(expr: str) -> set[str]:
    """Metric names a PromQL expression selects."""
    s = re.sub(r'"(?:[^"\\]|\\.)*"', '""', expr)  # strings (label values, may hold anything)
    s = re.sub(r"\{[^}]*\}", "", s)  # label matchers
    s = re.sub(r"\[[^\]]*\]", "", s)  # ranges and subqueries
    s = re.sub(r"\b(by|without|on|ignoring|group_left|group_right)\s*\([^)]*\)", "", s)  # grouping label lists
    s = re.sub(r"\$\{?\w+\}?", "", s)  # dashboard variables
    names = set()
    for m in re.finditer(r"(?<![\w:.])([A-Za-z_:][A-Za-z0-9_:]*)(\s*\()?", s):
        word, call = m.group(1), m.group(2)
        if call or word.lower() in KEYWORDS:
            continue
        names.add(word)
    return names


def dashboard_queries() -> list[str]:
    dash = json.loads(DASHBOARD.read_text())
    queries = [t["expr"] for p in dash["panels"] for t in p.get("targets", [])]
    queries += [v["query"] for v in dash["templating"]["list"] if v.get("type") == "query"]
    return queries


def rule_queries() -> list[tuple[str, str]]:
    doc = yaml.safe_load(RULES.read_text())
    return [(r["alert"], r["expr"]) for g in doc["spec"]["groups"] for r in g["rules"]]


def test_lexer_finds_names_and_skips_the_rest():
    quantile = 'histogram_quantile(0.95, sum by (le, kind) (rate(llmops_queue_wait_seconds_bucket{kind=~"a|b"}[5m])))'
    assert metric_names(quantile) == {"llmops_queue_wait_seconds_bucket"}
    ratio = 'sum(rate(a_total{x="by(y)"}[1m])) / ignoring(q) vllm:num_requests_waiting > bool 3'
    assert metric_names(ratio) == {"a_total", "vllm:num_requests_waiting"}
    assert metric_names("label_values(llmops_job_goodput_ratio, namespace)") == {"llmops_job_goodput_ratio", "namespace"}


def test_exported_names_have_the_documented_shape():
    names = exported()
    assert {"llmops_reconcile_total", "llmops_job_restarts_total", "llmops_checkpoint_age_seconds",
            "llmops_model_load_seconds_bucket", "vllm:num_requests_waiting", "llmops_cr_condition"} <= names
    assert "llmops_not_a_metric" not in names


@pytest.mark.parametrize("expr", dashboard_queries())
def test_dashboard_query_names_exported_metrics(expr):
    if expr.startswith("label_values("):
        inner = expr[len("label_values("):-1].split(",")[0].strip()
        found = metric_names(inner)
    else:
        found = metric_names(expr)
    assert found, expr
    assert found <= exported(), found - exported()


def test_dashboard_json_is_grafana_shaped():
    dash = json.loads(DASHBOARD.read_text())
    ids = [p["id"] for p in dash["panels"]]
    assert len(ids) == len(set(ids)) and dash["uid"] and dash["title"]
    for p in dash["panels"]:
        assert p["targets"] and p["fieldConfig"]["defaults"]["unit"], p["title"]
        assert {"x", "y", "w", "h"} <= set(p["gridPos"])
    # every operator metric appears on the dashboard somewhere
    used = set().union(*(metric_names(q) for q in dashboard_queries()))
    for family in Metrics().registry.collect():
        assert any(u.startswith(family.name) for u in used), family.name


@pytest.mark.parametrize("alert,expr", rule_queries())
def test_alert_names_exported_metrics(alert, expr):
    found = metric_names(expr)
    assert found, alert
    assert found <= exported(), (alert, found - exported())


def test_prometheus_rule_is_valid_and_covers_the_issue():
    doc = yaml.safe_load(RULES.read_text())
    assert doc["apiVersion"] == "monitoring.coreos.com/v1" and doc["kind"] == "PrometheusRule"
    alerts = {}
    for g in doc["spec"]["groups"]:
        assert g["name"] and g["rules"]
        for r in g["rules"]:
            assert set(r) <= {"alert", "expr", "for", "labels", "annotations", "keep_firing_for"}, r
            assert r["labels"]["severity"] in {"info", "warning", "critical"}
            assert r["annotations"]["summary"]
            if "for" in r:
                assert re.fullmatch(r"\d+[smh]", r["for"])
            alerts[r["alert"]] = r
    assert {"LlmopsJobStalled", "LlmopsCheckpointTooOld", "LlmopsRepeatedRestarts", "LlmopsInferenceServiceNotReady"} <= set(alerts)
    kust = yaml.safe_load((ROOT / "manifests" / "alerts" / "kustomization.yaml").read_text())
    assert kust["resources"] == ["prometheusrule.yaml"]
