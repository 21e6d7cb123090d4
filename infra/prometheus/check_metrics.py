#!/usr/bin/env python3
"""Checks the Grafana dashboards and Prometheus rule files against the code.

    check_metrics.py FILE...     # *.json: Grafana dashboards; *.yaml: rule files or
                                 # promtool rule tests (told apart by their keys)

Every PromQL expression (dashboard targets and query variables, rule `expr`s, the
series and `expr`s of rule tests) must parse, and every metric it names must be one
the code emits, or one of the external metrics allow-listed below. The names emitted
by the code are collected from:

- the `METRICS` lists in crates/relay/src/events.rs and crates/sync/src/events.rs;
- every `metrics::counter!/gauge!/histogram!("name"` literal in crates/*/src/**/*.rs,
  and names passed through a constant or a struct field (`metrics::counter!(NAME` /
  `metrics::counter!(s.field`), resolved to the string literal assigned to that name
  (`const NAME: &str = "…"`, `field: "…"`) anywhere in crates/*/src.

A histogram also answers to `_bucket`, `_sum` and `_count` (the relay's, which have no
configured buckets, are rendered as summaries: the base name with a `quantile` label).

Also checked: a dashboard has schemaVersion >= 36, a `datasource` variable of type
datasource and a `table` variable, every panel (rows aside) has targets and queries
the `${datasource}` variable; an alerting rule has `for`, a `severity` label and
`summary` and `description` annotations, and the description names a section of
docs/operations.md (`§4.1 …`) that exists there.

Needs PyYAML and promql-parser (the venv of scripts/validate-infra has both).
Exit status 1 with one line per problem, naming the file, the panel or rule, and the
metric.
"""

from __future__ import annotations

import json
import re
import sys
from pathlib import Path

import promql_parser
import yaml

ROOT = Path(__file__).resolve().parents[2]

# Metrics the code does not emit but the dashboard and rules use. Keep each with its
# source; a name not here and not in the code fails the check.
EXTERNAL = {
    # Prometheus itself: 1 when the last scrape of a target succeeded.
    "up": "Prometheus scrape status",
    # yet-another-cloudwatch-exporter (infra/prometheus/yace-sqs.yaml): CloudWatch
    # AWS/SQS metrics, named aws_sqs_<metric in snake case>_<statistic>, with the queue
    # in the label dimension_QueueName.
    "aws_sqs_approximate_number_of_messages_visible_average": "SQS ApproximateNumberOfMessagesVisible, Average (YACE)",
    "aws_sqs_approximate_age_of_oldest_message_maximum": "SQS ApproximateAgeOfOldestMessage, Maximum (YACE)",
}

MACRO = re.compile(r"metrics::(counter|gauge|histogram)!\(\s*([^,)\s]+)")
LITERAL = re.compile(r'^"([a-zA-Z_:][a-zA-Z0-9_:]*)"$')
METRICS_BLOCK = re.compile(r"pub const METRICS: &\[\(&str, &str\)\] = &\[(.*?)\n\];", re.S)
METRICS_ENTRY = re.compile(r'\(\s*"([a-z0-9_]+)"\s*,')
SECTION = re.compile(r"§\s*([0-9]+(?:\.[0-9]+)?)")


def emitted(root: Path) -> tuple[dict[str, str], list[str]]:
    """Metric name → where it was found; plus warnings about unresolved names."""
    names: dict[str, str] = {}
    histograms: set[str] = set()
    warnings: list[str] = []
    sources = sorted(root.glob("crates/*/src/**/*.rs"))
    texts = {p: p.read_text(encoding="utf-8") for p in sources}

    for rel in ("crates/relay/src/events.rs", "crates/sync/src/events.rs"):
        block = METRICS_BLOCK.search(texts.get(root / rel, ""))
        if not block:
            warnings.append(f"{rel}: no METRICS list found")
            continue
        for name in METRICS_ENTRY.findall(block.group(1)):
            names.setdefault(name, f"{rel} METRICS")

    for path, text in texts.items():
        rel = path.relative_to(root)
        for m in MACRO.finditer(text):
            kind, arg = m.group(1), m.group(2)
            lit = LITERAL.match(arg)
            if lit:
                found = [lit.group(1)]
            else:
                # A constant or a field: `BATCH_ROWS`, `s.throttle_metric`.
                ident = arg.split(".")[-1].split("::")[-1]
                assigned = re.compile(
                    rf'\b{re.escape(ident)}\s*(?::\s*&(?:\'static\s+)?str\s*=|:)\s*"([a-zA-Z_:][a-zA-Z0-9_:]*)"'
                )
                found = sorted({n for t in texts.values() for n in assigned.findall(t)})
                if not found:
                    line = text.count("\n", 0, m.start()) + 1
                    warnings.append(f"{rel}:{line}: metric name {arg} not resolved to a string literal")
            for name in found:
                names.setdefault(name, f"{rel}")
                if kind == "histogram":
                    histograms.add(name)
    for h in histograms:
        for suffix in ("_bucket", "_sum", "_count"):
            names.setdefault(h + suffix, f"histogram {h}")
    return names, warnings


GRAFANA_DURATION = re.compile(r"\$__(rate_interval|interval|range)\b|\$\{__(rate_interval|interval|range)\}")
GRAFANA_VAR = re.compile(r"\$\{(\w+)(?::\w+)?\}|\$(\w+)")


def degrafana(expr: str) -> str:
    """Grafana variables → something PromQL parses: durations → 5m, others → a word."""
    expr = GRAFANA_DURATION.sub("5m", expr)
    return GRAFANA_VAR.sub(lambda m: "var_" + (m.group(1) or m.group(2)), expr)


def selectors(expr: str) -> list[str]:
    """Metric names selected by a PromQL expression (raises ValueError if it does not parse)."""
    found: list[str] = []
    bad: list[str] = []

    def visit(node):
        if isinstance(node, promql_parser.VectorSelector):
            if node.name:
                found.append(node.name)
            else:
                eq = [m.value for m in node.matchers.matchers if m.name == "__name__" and str(m.op) in ("=", "MatchOp.Equal")]
                if eq:
                    found.append(eq[0])
                else:
                    bad.append(str(node))
        return True

    promql_parser.walk(promql_parser.parse(expr), visit)
    if bad:
        raise ValueError(f"selector without a literal metric name, cannot be checked: {', '.join(bad)}")
    return found


class Checker:
    def __init__(self, root: Path):
        self.root = root
        self.known, self.warnings = emitted(root)
        self.known.update({k: "allow-list: " + v for k, v in EXTERNAL.items()})
        self.problems: list[str] = []
        self.used: dict[str, int] = {}
        ops = root / "docs/operations.md"
        self.sections = set(re.findall(r"^#{2,3} ([0-9]+(?:\.[0-9]+)?)[. ]", ops.read_text(encoding="utf-8"), re.M)) if ops.exists() else set()

    def fail(self, file: str, where: str, msg: str):
        self.problems.append(f"{file}: {where}: {msg}")

    def expr(self, file: str, where: str, expr: str):
        try:
            names = selectors(expr)
        except ValueError as e:
            self.fail(file, where, f"PromQL does not parse or cannot be checked: {e}\n    {expr.strip()}")
            return
        for n in names:
            self.used[n] = self.used.get(n, 0) + 1
            if n not in self.known:
                self.fail(file, where, f"unknown metric {n!r}: the code does not emit it and it is not in the allow-list (infra/prometheus/check_metrics.py EXTERNAL)")

    # ------------------------------------------------------------------ dashboards
    def dashboard(self, path: Path):
        file = str(path.relative_to(self.root)) if path.is_relative_to(self.root) else str(path)
        try:
            d = json.loads(path.read_text(encoding="utf-8"))
        except json.JSONDecodeError as e:
            self.fail(file, "JSON", str(e))
            return
        if not isinstance(d.get("schemaVersion"), int) or d["schemaVersion"] < 36:
            self.fail(file, "schemaVersion", f"{d.get('schemaVersion')!r}, want >= 36")
        variables = {v.get("name"): v for v in d.get("templating", {}).get("list", [])}
        if variables.get("datasource", {}).get("type") != "datasource" or variables["datasource"].get("query") != "prometheus":
            self.fail(file, "templating", "no `datasource` variable of type datasource (query prometheus)")
        if "table" not in variables:
            self.fail(file, "templating", "no `table` variable")
        for name, v in variables.items():
            if v.get("type") == "query":
                q = v.get("query")
                q = q.get("query", "") if isinstance(q, dict) else (q or "")
                m = re.fullmatch(r"\s*label_values\(\s*(.*?)\s*,\s*\w+\s*\)\s*", q)
                self.expr(file, f"variable {name}", degrafana(m.group(1) if m else q))

        def walk(panels):
            for p in panels:
                yield p
                yield from walk(p.get("panels", []))

        ids = set()
        for p in walk(d.get("panels", [])):
            where = f"panel {p.get('id')} {p.get('title', '')!r}"
            if p.get("id") in ids:
                self.fail(file, where, "duplicate panel id")
            ids.add(p.get("id"))
            if p.get("type") == "row":
                continue
            targets = p.get("targets") or []
            if not targets:
                self.fail(file, where, "no targets")
            for t in targets:
                ds = t.get("datasource") or p.get("datasource") or {}
                if ds.get("uid") != "${datasource}":
                    self.fail(file, f"{where} target {t.get('refId')}", "datasource is not the ${datasource} variable")
                if not t.get("expr", "").strip():
                    self.fail(file, f"{where} target {t.get('refId')}", "empty expr")
                    continue
                self.expr(file, f"{where} target {t.get('refId')}", degrafana(t["expr"]))

    # ------------------------------------------------------------------ rules
    def yaml_file(self, path: Path):
        file = str(path.relative_to(self.root)) if path.is_relative_to(self.root) else str(path)
        try:
            doc = yaml.safe_load(path.read_text(encoding="utf-8"))
        except yaml.YAMLError as e:
            self.fail(file, "YAML", str(e))
            return
        if isinstance(doc, dict) and "groups" in doc:
            self.rules(file, doc)
        elif isinstance(doc, dict) and "tests" in doc:
            self.rule_tests(file, doc)
        else:
            self.fail(file, "top level", "neither a rule file (groups:) nor a rule test file (tests:)")

    def rules(self, file: str, doc: dict):
        for g in doc["groups"] or []:
            for r in g.get("rules") or []:
                name = r.get("alert") or r.get("record")
                where = f"group {g.get('name')} rule {name}"
                self.expr(file, where, str(r.get("expr", "")))
                if "alert" not in r:
                    continue
                if "for" not in r:
                    self.fail(file, where, "no `for:`")
                if (r.get("labels") or {}).get("severity") not in ("critical", "warning", "info"):
                    self.fail(file, where, "labels.severity must be critical, warning or info")
                ann = r.get("annotations") or {}
                for key in ("summary", "description"):
                    if not str(ann.get(key, "")).strip():
                        self.fail(file, where, f"no annotations.{key}")
                desc = str(ann.get("description", ""))
                secs = SECTION.findall(desc)
                if "docs/operations.md" not in desc or not secs:
                    self.fail(file, where, "annotations.description must name a runbook section: docs/operations.md §N.N title")
                for s in secs:
                    if s not in self.sections:
                        self.fail(file, where, f"§{s} is not a section of docs/operations.md")

    def rule_tests(self, file: str, doc: dict):
        for i, t in enumerate(doc.get("tests") or []):
            for s in t.get("input_series") or []:
                self.expr(file, f"test {i} series", str(s.get("series", "")))
            for e in t.get("promql_expr_test") or []:
                self.expr(file, f"test {i} promql_expr_test", str(e.get("expr", "")))


def main(argv: list[str]) -> int:
    if not argv:
        print(__doc__, file=sys.stderr)
        return 2
    c = Checker(ROOT)
    for w in c.warnings:
        print(f"warning: {w}", file=sys.stderr)
    for a in argv:
        p = Path(a).resolve()
        if not p.exists():
            c.fail(a, "file", "not found")
        elif p.suffix == ".json":
            c.dashboard(p)
        elif p.suffix in (".yaml", ".yml"):
            c.yaml_file(p)
        else:
            c.fail(a, "file", "not a .json dashboard or a .yaml rule file")
    for msg in c.problems:
        print(f"check_metrics: {msg}", file=sys.stderr)
    code_names = sum(1 for v in c.known.values() if not v.startswith("allow-list"))
    used_code = sorted(n for n in c.used if not c.known.get(n, "").startswith("allow-list"))
    summary = (f"{len(argv)} file(s), {len(c.used)} metric name(s) used ({len(used_code)} from the code, "
               f"{len(c.used) - len(used_code)} allow-listed), {code_names} known from the code")
    if c.problems:
        print(f"check_metrics: {len(c.problems)} problem(s); {summary}", file=sys.stderr)
        return 1
    print(summary)
    return 0


if __name__ == "__main__":
    sys.exit(main(sys.argv[1:]))
