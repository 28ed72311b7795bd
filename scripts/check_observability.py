#!/usr/bin/env python3
"""Checks the Grafana dashboard and the Prometheus rules against what Bulwark really exports.

  check_observability.py --metrics SCRAPE --dashboard JSON --rules YAML [--tests YAML]
                         [--reference docs/reference.md] [--runbooks docs/runbooks.md]

SCRAPE is the text of GET /metrics from a running Bulwark (scripts/observability_scrape.py
makes one with every block turned on). Checked:

- the dashboard: valid JSON, uid "bulwark-overview", a schemaVersion, a `datasource` variable
  of type datasource for prometheus, the variables listener/route/upstream (query, multi,
  include all, label_values over a metric and label of the scrape), unique panel ids, every
  panel on the `${datasource}` data source with at least one query, every range selector
  `[$__rate_interval]`;
- every PromQL expression (dashboard queries, rules): every metric name is a series name of
  the scrape (a histogram's _bucket, _sum and _count) or a name recorded by the rules; every
  label in a selector is one the metric has (or a scrape target label: job, instance,
  namespace, pod); fixed values (state, outcome, result, decision, scope, priority, to) are
  ones the scrape shows, local reply reasons ones docs/reference.md lists; labels in by(),
  without(), on() and ignoring() exist on some Bulwark metric or are made by label_replace;
- the rules: every alert has a severity label, summary and description annotations and a
  runbook_url "docs/runbooks.md#ANCHOR" whose heading exists in the runbooks; with --tests,
  every alert has a promtool test case where it fires and one where it does not;
- the scrape against docs/reference.md: every metric family exported is documented, and every
  documented one is exported.

Prints what it checked; exits 1 with one line per problem. Python 3 standard library, plus
PyYAML (Debian python3-yaml) to read the rules.
"""
import argparse
import json
import re
import sys

try:
    import yaml
except ImportError:  # pragma: no cover
    sys.exit("check_observability: needs PyYAML (Debian package python3-yaml)")

TARGET_LABELS = {"job", "instance", "namespace", "pod"}
ENUM_LABELS = {"state", "outcome", "result", "decision", "scope", "priority", "to"}
LABEL_LIST_KEYWORDS = {"by", "without", "on", "ignoring", "group_left", "group_right"}
KEYWORDS = {"and", "or", "unless", "bool", "offset", "atan2", "inf", "nan", "start", "end"}
AGGREGATORS = {"sum", "min", "max", "avg", "group", "stddev", "stdvar", "count", "count_values",
               "bottomk", "topk", "quantile"}
REQUIRED_VARIABLES = ("listener", "route", "upstream")

problems = []
USED = set()   # metric names in every expression checked


def problem(where, text):
    problems.append("%s: %s" % (where, text))


# ---- the scrape ------------------------------------------------------------------------------
class Scrape:
    def __init__(self, text):
        self.types = {}     # family -> type
        self.labels = {}    # series name -> {label: set(values)}
        sample = re.compile(r'^([a-zA-Z_:][a-zA-Z0-9_:]*)(\{(.*)\})?\s+\S+(\s+\S+)?$')
        pair = re.compile(r'([a-zA-Z_][a-zA-Z0-9_]*)="((?:[^"\\]|\\.)*)"')
        for line in text.splitlines():
            if line.startswith("# TYPE "):
                _, _, name, kind = line.split(None, 3)
                self.types[name] = kind.strip()
                continue
            if not line.strip() or line.startswith("#"):
                continue
            m = sample.match(line)
            if not m:
                problem("scrape", "cannot read the line %r" % line)
                continue
            labels = self.labels.setdefault(m.group(1), {})
            for k, v in pair.findall(m.group(3) or ""):
                labels.setdefault(k, set()).add(v)
        self.all_labels = set()
        for labels in self.labels.values():
            self.all_labels |= set(labels)

    def family(self, series):
        for suffix in ("_bucket", "_sum", "_count"):
            base = series[:-len(suffix)]
            if series.endswith(suffix) and self.types.get(base) in ("histogram", "summary"):
                return base
        return series


# ---- PromQL, enough of it to find names and labels --------------------------------------------
TOKEN = re.compile(r'''
    (?P<ws>\s+)
  | (?P<string>"(?:[^"\\]|\\.)*"|'(?:[^'\\]|\\.)*'|`[^`]*`)
  | (?P<var>\$\{[^}]*\}|\$[A-Za-z0-9_]+)
  | (?P<number>(?:\d+(?:\.\d*)?|\.\d+)(?:[eE][+-]?\d+)?(?:ms|s|m|h|d|w|y)?(?:\d+(?:ms|s|m|h|d|w|y))*)
  | (?P<ident>[A-Za-z_:][A-Za-z0-9_:]*)
  | (?P<op>=~|!~|!=|==|<=|>=|[-+*/%^<>=(){}\[\],@:])
''', re.VERBOSE)


def tokenize(expr, where):
    pos, out = 0, []
    while pos < len(expr):
        m = TOKEN.match(expr, pos)
        if not m:
            problem(where, "cannot read the expression at %r" % expr[pos:pos + 20])
            return []
        pos = m.end()
        if m.lastgroup != "ws":
            out.append((m.lastgroup, m.group()))
    return out


def unquote(s):
    return s[1:-1]


class Expr:
    """Metric names, selector matchers, grouping labels, label_replace targets and range
    selectors of one PromQL expression."""

    def __init__(self, expr, where):
        self.metrics = []        # names
        self.matchers = []       # (metric or None, label, op, value)
        self.grouping = []       # label names in by/without/on/ignoring/group_*
        self.made = set()        # labels made by label_replace/label_join
        self.ranges = []         # text inside [...]
        self.selector_metric = None   # the metric whose {...} is being read
        toks = tokenize(expr, where)
        stack = []               # kinds of open brackets: "(" expr, "labels", "{", "["
        calls = []               # per open "(": [function name, commas seen]
        i = 0
        while i < len(toks):
            kind, text = toks[i]
            nxt = toks[i + 1] if i + 1 < len(toks) else (None, None)
            ctx = stack[-1] if stack else None
            if ctx == "[":
                if text == "]":
                    stack.pop()
                    self.ranges[-1] = self.ranges[-1].strip()
                else:
                    self.ranges[-1] += text
                i += 1
                continue
            if ctx == "{":
                if text == "}":
                    stack.pop()
                elif kind == "ident":
                    # label OP value
                    if i + 2 < len(toks) and toks[i + 1][1] in ("=", "!=", "=~", "!~"):
                        metric = self.selector_metric
                        vkind, vtext = toks[i + 2]
                        value = unquote(vtext) if vkind == "string" else None
                        self.matchers.append((metric, text, toks[i + 1][1], value))
                        i += 3
                        continue
                    problem(where, "cannot read the matcher at %r" % text)
                i += 1
                continue
            if ctx == "labels":
                if text == ")":
                    stack.pop()
                elif kind == "ident":
                    self.grouping.append(text)
                i += 1
                continue
            if text == "{":
                prev = toks[i - 1] if i > 0 else (None, None)
                self.selector_metric = prev[1] if prev[0] == "ident" and prev[1] in self.metrics else None
                stack.append("{")
            elif text == "[":
                stack.append("[")
                self.ranges.append("")
            elif text == "(":
                stack.append("(")
                prev = toks[i - 1] if i > 0 else (None, None)
                calls.append([prev[1] if prev[0] == "ident" else None, 0])
            elif text == ")":
                if stack:
                    stack.pop()
                if calls:
                    calls.pop()
            elif text == ",":
                if calls:
                    calls[-1][1] += 1
            elif kind == "string":
                if calls and calls[-1][0] in ("label_replace", "label_join") and calls[-1][1] == 1:
                    self.made.add(unquote(text))
            elif kind == "ident":
                if text in LABEL_LIST_KEYWORDS:
                    if nxt[1] == "(":
                        stack.append("labels")
                        i += 2
                        continue
                elif text in KEYWORDS:
                    if text == "offset":
                        i += 2   # its duration
                        continue
                elif text in AGGREGATORS or nxt[1] == "(":
                    pass     # a function or an aggregation
                else:
                    self.metrics.append(text)
                    self.selector_metric = text
            i += 1


def check_expr(expr, where, scrape, recorded, reasons, dashboard):
    e = Expr(expr, where)
    USED.update(e.metrics)
    if not e.metrics:
        problem(where, "no metric in %r" % expr)
    for name in e.metrics:
        if ":" in name:
            if name not in recorded:
                problem(where, "%s is not recorded by the rules" % name)
        elif name not in scrape.labels:
            problem(where, "unknown metric %s (not in the scrape of a running Bulwark)" % name)
    for metric, label, op, value in e.matchers:
        if metric is None or ":" in metric or metric not in scrape.labels:
            continue
        have = scrape.labels[metric]
        if label == "__name__" or label in TARGET_LABELS:
            continue
        if label not in have:
            problem(where, "%s has no label %s (it has: %s)" % (metric, label, ", ".join(sorted(have)) or "none"))
            continue
        if value is None or "$" in value or op in ("!~",):
            continue
        if op in ("=~", "!~") and not re.fullmatch(r"[A-Za-z0-9_-]+(\|[A-Za-z0-9_-]+)*", value):
            continue   # a real regex (5..): not checked
        if label in ENUM_LABELS:
            known = have[label]
        elif label == "reason" and scrape.family(metric) == "bulwark_local_replies_total" and reasons:
            known = reasons
        else:
            continue
        for v in value.split("|"):
            if v not in known:
                problem(where, '%s{%s%s"%s"}: no such value (known: %s)' % (metric, label, op, v, ", ".join(sorted(known))))
    for label in e.grouping:
        if label not in scrape.all_labels and label not in TARGET_LABELS and label not in e.made:
            problem(where, "grouping by %s, a label no Bulwark metric has" % label)
    for r in e.ranges:
        if dashboard and r != "$__rate_interval":
            problem(where, "range [%s]: dashboard ranges must be [$__rate_interval]" % r)
    return e


# ---- docs ------------------------------------------------------------------------------------
def reference_tables(path):
    """(metric names of the Metrics table, local reply reasons) from docs/reference.md."""
    text = open(path).read()
    metrics, reasons = set(), set()
    section = None
    for line in text.splitlines():
        if line.startswith("## ") or line.startswith("### "):
            section = line.lstrip("#").strip()
            continue
        m = re.match(r"^\|\s*`([a-z0-9_-]+)`\s*\|", line)
        if not m:
            continue
        if section == "Metrics" and m.group(1).startswith("bulwark_"):
            metrics.add(m.group(1))
        elif section == "Local replies":
            reasons.add(m.group(1))
    return metrics, reasons


def anchors(path):
    out = set()
    for line in open(path).read().splitlines():
        m = re.match(r"^#{1,6}\s+(.*)$", line)
        if m:
            slug = re.sub(r"[^\w\- ]", "", m.group(1).strip().lower()).replace(" ", "-")
            out.add(slug)
    return out


# ---- dashboard -------------------------------------------------------------------------------
def walk_panels(panels):
    for p in panels:
        yield p
        yield from walk_panels(p.get("panels") or [])


def check_dashboard(path, scrape, recorded, reasons):
    try:
        d = json.load(open(path))
    except (OSError, ValueError) as e:
        problem(path, "not valid JSON: %s" % e)
        return 0, 0
    if d.get("uid") != "bulwark-overview":
        problem(path, 'uid is %r, not "bulwark-overview"' % d.get("uid"))
    if not isinstance(d.get("schemaVersion"), int):
        problem(path, "no schemaVersion")
    variables = {v.get("name"): v for v in (d.get("templating") or {}).get("list", [])}
    ds = variables.get("datasource")
    if not ds or ds.get("type") != "datasource" or ds.get("query") != "prometheus":
        problem(path, "no `datasource` variable of type datasource with query prometheus")
    for name in REQUIRED_VARIABLES:
        v = variables.get(name)
        where = "%s: variable %s" % (path, name)
        if not v:
            problem(path, "no template variable %s" % name)
            continue
        if v.get("type") != "query" or not v.get("multi") or not v.get("includeAll"):
            problem(where, "must be a query variable with multi and includeAll")
        query = v.get("query")
        query = query.get("query") if isinstance(query, dict) else query
        m = re.fullmatch(r"\s*label_values\((.*),\s*([A-Za-z_][A-Za-z0-9_]*)\s*\)\s*", query or "")
        if not m:
            problem(where, "query %r is not label_values(METRIC, LABEL)" % query)
            continue
        e = check_expr(m.group(1), where, scrape, recorded, reasons, True)
        for metric in e.metrics:
            if metric in scrape.labels and m.group(2) not in scrape.labels[metric]:
                problem(where, "%s has no label %s" % (metric, m.group(2)))
        if (v.get("datasource") or {}).get("uid") not in ("${datasource}", "$datasource"):
            problem(where, "not on the ${datasource} data source")
    ids, count, queries = set(), 0, 0
    for p in walk_panels(d.get("panels") or []):
        where = "%s: panel %r" % (path, p.get("title"))
        if p.get("id") in ids:
            problem(where, "duplicate id %r" % p.get("id"))
        ids.add(p.get("id"))
        if "gridPos" not in p:
            problem(where, "no gridPos")
        if p.get("type") == "row":
            continue
        count += 1
        if (p.get("datasource") or {}).get("uid") not in ("${datasource}", "$datasource"):
            problem(where, "not on the ${datasource} data source")
        targets = p.get("targets") or []
        if not targets:
            problem(where, "no query")
        for t in targets:
            if (t.get("datasource") or {}).get("uid") not in (None, "${datasource}", "$datasource"):
                problem(where, "query %s not on the ${datasource} data source" % t.get("refId"))
            if not t.get("expr"):
                problem(where, "query %s has no expr" % t.get("refId"))
                continue
            queries += 1
            check_expr(t["expr"], where, scrape, recorded, reasons, True)
    return count, queries


# ---- rules -----------------------------------------------------------------------------------
def load_rules(path):
    try:
        doc = yaml.safe_load(open(path))
    except (OSError, yaml.YAMLError) as e:
        problem(path, "cannot read: %s" % e)
        return []
    return [r for g in (doc or {}).get("groups", []) for r in g.get("rules", [])]


def check_rules(path, rules, scrape, recorded, reasons, runbook_anchors):
    alerts = []
    for r in rules:
        name = r.get("alert") or r.get("record")
        where = "%s: %s" % (path, name)
        check_expr(str(r.get("expr", "")), where, scrape, recorded, reasons, False)
        if "alert" not in r:
            continue
        alerts.append(name)
        labels, ann = r.get("labels") or {}, r.get("annotations") or {}
        if labels.get("severity") not in ("critical", "warning", "info"):
            problem(where, "severity label is %r, not critical, warning or info" % labels.get("severity"))
        for key in ("summary", "description", "runbook_url"):
            if not ann.get(key):
                problem(where, "no %s annotation" % key)
        url = ann.get("runbook_url") or ""
        m = re.fullmatch(r"docs/runbooks\.md#([a-z0-9-]+)", url)
        if not m:
            problem(where, 'runbook_url %r is not "docs/runbooks.md#ANCHOR"' % url)
        elif runbook_anchors is not None and m.group(1) not in runbook_anchors:
            problem(where, "runbook_url anchor #%s is not a heading of the runbooks" % m.group(1))
    return alerts


def check_tests(path, alerts):
    try:
        doc = yaml.safe_load(open(path))
    except (OSError, yaml.YAMLError) as e:
        problem(path, "cannot read: %s" % e)
        return 0
    fires, quiet, cases = {}, {}, 0
    for t in doc.get("tests", []):
        for case in t.get("alert_rule_test", []) or []:
            cases += 1
            name = case.get("alertname")
            (fires if case.get("exp_alerts") else quiet)[name] = True
    for a in alerts:
        if a not in fires:
            problem(path, "no test case where %s fires" % a)
        if a not in quiet:
            problem(path, "no test case where %s does not fire" % a)
    return cases


def main():
    ap = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    ap.add_argument("--metrics", required=True)
    ap.add_argument("--dashboard", required=True)
    ap.add_argument("--rules", required=True)
    ap.add_argument("--tests")
    ap.add_argument("--reference")
    ap.add_argument("--runbooks")
    args = ap.parse_args()

    scrape = Scrape(open(args.metrics).read())
    if not scrape.labels:
        problem(args.metrics, "no samples")
    documented, reasons = reference_tables(args.reference) if args.reference else (set(), set())
    if args.reference:
        exported = set(scrape.types)
        for name in sorted(exported - documented):
            problem(args.reference, "%s is exported but not in the Metrics table" % name)
        for name in sorted(documented - exported):
            problem(args.metrics, "%s is documented but not exported (is its block on in the scrape's config?)" % name)
    runbook_anchors = anchors(args.runbooks) if args.runbooks else None

    rules = load_rules(args.rules)
    recorded = {r["record"] for r in rules if "record" in r}
    alerts = check_rules(args.rules, rules, scrape, recorded, reasons, runbook_anchors)
    cases = check_tests(args.tests, alerts) if args.tests else 0
    panels, queries = check_dashboard(args.dashboard, scrape, recorded, reasons)

    unused = sorted(set(scrape.types) - {scrape.family(m) for m in USED})

    if problems:
        for p in problems:
            print("INVALID " + p, file=sys.stderr)
        print("check_observability: FAIL: %d problem(s)" % len(problems), file=sys.stderr)
        sys.exit(1)
    print("check_observability: OK: %d metric families in the scrape; dashboard %d panels, %d queries; "
          "rules: %d recorded, %d alerts%s" % (
              len(scrape.types), panels, queries, len(recorded), len(alerts),
              "; %d alert test cases" % cases if args.tests else ""))
    if unused:
        print("check_observability: exported but used by neither dashboard nor rules: " + ", ".join(unused))


if __name__ == "__main__":
    main()
