import { readFileSync } from 'node:fs';
import { describe, expect, it } from 'vitest';
import { parse } from 'yaml';
import { Metrics } from '../../replicator/metrics.ts';

// The operations bundle (deploy/) against the code: every metric a Prometheus rule or a Grafana
// query names is one the replicator exports, and every alert has its runbook and its promtool cases.
// deploy/check.sh runs promtool itself.

const RULES = 'deploy/prometheus/edgeplane-alerts.yml';
const RULE_TESTS = 'deploy/prometheus/edgeplane-alerts.test.yml';
const DASHBOARD = 'deploy/grafana/edgeplane-replicator.json';
const RUNBOOKS = 'docs/runbooks.md';

interface Rule {
  alert?: string;
  record?: string;
  expr: string;
  for?: string;
  labels?: Record<string, string>;
  annotations?: Record<string, string>;
}

const rules: Rule[] = (parse(readFileSync(RULES, 'utf8')) as { groups: { rules: Rule[] }[] }).groups.flatMap((g) => g.rules);
const alerts = rules.filter((r) => r.alert !== undefined);
const recorded = new Set(rules.flatMap((r) => (r.record ? [r.record] : [])));
const dashboard: unknown = JSON.parse(readFileSync(DASHBOARD, 'utf8'));

/** Series names the registry exposes: each metric's name, and for histograms and summaries their series. */
function exportedSeries(metrics: { type: unknown; name: string }[]): Set<string> {
  const names = new Set<string>();
  for (const m of metrics) {
    names.add(m.name);
    // prom-client declares `type` as a numeric enum; at run time it is the Prometheus type's name.
    const type = String(m.type);
    const suffixes = type === 'histogram' ? ['_bucket', '_sum', '_count'] : type === 'summary' ? ['_sum', '_count'] : [];
    for (const s of suffixes) names.add(m.name + s);
  }
  return names;
}

const KEYWORDS = new Set(['and', 'or', 'unless', 'by', 'without', 'on', 'ignoring', 'group_left', 'group_right', 'offset', 'bool', 'inf', 'nan', 'atan2']);

/** The metric names a PromQL expression selects (Grafana's `$variables` allowed). */
function metricNames(expr: string): string[] {
  const bare = expr
    .replace(/"(?:[^"\\]|\\.)*"|'(?:[^'\\]|\\.)*'|`[^`]*`/g, '""') // strings: label values, regexes
    .replace(/#[^\n]*/g, '') // comments
    .replace(/\$\{[^}]*\}|\$\w+/g, ' ') // Grafana variables
    .replace(/\{[^}]*\}/g, ' ') // label matchers
    .replace(/\[[^\]]*\]/g, ' ') // ranges and subqueries
    .replace(/\b(?:by|without|on|ignoring|group_left|group_right)\s*\([^)]*\)/g, ' '); // label lists
  const names: string[] = [];
  // An identifier not glued to a number or a dot (1e9, 15m, 0.5), not a function (followed by "(").
  for (const m of bare.matchAll(/(?<![\w.:])([A-Za-z_:][\w:]*)(?![\w:])(?!\s*\()/g)) {
    const name = m[1] as string;
    if (!KEYWORDS.has(name.toLowerCase())) names.push(name);
  }
  return names;
}

/** Grafana template queries: `label_values(selector, label)` names the selector's metric. */
function templateExprs(query: string): string[] {
  const m = /^\s*(?:label_values|query_result)\((.*?)(?:,\s*\w+)?\)\s*$/s.exec(query);
  if (m) return m[1] ? [m[1]] : [];
  return [query];
}

/** Every PromQL query of the dashboard: panel targets, annotations, template variables. */
function dashboardExprs(node: unknown, out: { where: string; expr: string }[] = [], where = 'dashboard'): { where: string; expr: string }[] {
  if (Array.isArray(node)) {
    for (const [i, n] of node.entries()) dashboardExprs(n, out, `${where}[${i}]`);
  } else if (node && typeof node === 'object') {
    const o = node as Record<string, unknown>;
    const label = typeof o.title === 'string' ? `panel "${o.title}"` : typeof o.name === 'string' ? `"${o.name}"` : where;
    for (const [k, v] of Object.entries(o)) {
      if (k === 'expr' && typeof v === 'string') out.push({ where: label, expr: v });
      else if (k === 'query' && o.type === 'query') {
        const q = typeof v === 'string' ? v : (v as { query?: string })?.query;
        for (const e of q ? templateExprs(q) : []) out.push({ where: `variable ${label}`, expr: e });
      } else dashboardExprs(v, out, label);
    }
  }
  return out;
}

/** The offending names of some expressions, as "where: name" lines. */
function unknownNames(exprs: { where: string; expr: string }[], known: Set<string>): string[] {
  return exprs.flatMap(({ where, expr }) => metricNames(expr).flatMap((n) => (known.has(n) ? [] : [`${where}: ${n}`])));
}

async function knownNames(): Promise<Set<string>> {
  const exported = exportedSeries(await new Metrics().registry.getMetricsAsJSON());
  return new Set([...exported, ...recorded]);
}

describe('operations bundle (deploy/)', () => {
  it('names only metrics the replicator exports in every alerting and recording rule', async () => {
    const known = await knownNames();
    const exprs = rules.map((r) => ({ where: `rule ${r.alert ?? r.record}`, expr: r.expr }));
    expect(exprs.flatMap((e) => metricNames(e.expr)).length).toBeGreaterThan(rules.length);
    expect(unknownNames(exprs, known)).toEqual([]);
  });

  it('names only metrics the replicator exports in every dashboard query', async () => {
    const known = await knownNames();
    const exprs = dashboardExprs(dashboard);
    expect(exprs.length).toBeGreaterThan(20);
    expect(unknownNames(exprs, known)).toEqual([]);
  });

  it('finds the metric names of a query, and refuses a misspelled one or a suffix its type does not have', async () => {
    expect(
      metricNames(
        'sum by (job, reason) (increase(edgeplane_replicator_skipped_rows_total{reason!~"a|b"}[15m] offset 1h)) > 0.5 * scalar(edgeplane:max_slot_wal_keep_size_bytes) ' +
          'and on (job, instance) (changes((max by (job) (edgeplane_replicator_epoch > 0))[1h:1m]) > 1e3) or vector(17179869184) ' +
          'or histogram_quantile(0.99, sum by (le) (rate(request_seconds_bucket{job=~"$job"}[$__rate_interval])))',
      ),
    ).toEqual(['edgeplane_replicator_skipped_rows_total', 'edgeplane:max_slot_wal_keep_size_bytes', 'edgeplane_replicator_epoch', 'request_seconds_bucket']);
    const known = exportedSeries([
      { name: 'edgeplane_replicator_changes_total', type: 'counter' },
      { name: 'request_seconds', type: 'histogram' },
    ]);
    const check = (expr: string) => unknownNames([{ where: 'q', expr }], known);
    expect(check('rate(edgeplane_replicator_changes_total[5m])')).toEqual([]);
    expect(check('rate(edgeplane_replicator_change_total[5m])')).toEqual(['q: edgeplane_replicator_change_total']);
    expect(check('rate(request_seconds_bucket[5m]) + rate(request_seconds_count[5m])')).toEqual([]);
    expect(check('edgeplane_replicator_changes_total_count')).toEqual(['q: edgeplane_replicator_changes_total_count']);
    expect(templateExprs('label_values(edgeplane_replicator_streaming{job=~"$job"}, instance)')).toEqual(['edgeplane_replicator_streaming{job=~"$job"}']);
  });

  it('gives every alert a severity, a summary, a description and a runbook section that exists', () => {
    const headings = new Set(
      [...readFileSync(RUNBOOKS, 'utf8').matchAll(/^#{1,6} (.+)$/gm)].map((m) =>
        (m[1] as string)
          .trim()
          .toLowerCase()
          .replace(/[^\w\- ]/g, '')
          .replace(/ /g, '-'),
      ),
    );
    const problems = alerts.flatMap((a) => {
      const p: string[] = [];
      if (!['critical', 'warning'].includes(a.labels?.severity ?? '')) p.push(`${a.alert}: severity`);
      if (!a.annotations?.summary || !a.annotations.description) p.push(`${a.alert}: summary or description`);
      const anchor = /^docs\/runbooks\.md#(.+)$/.exec(a.annotations?.runbook_url ?? '')?.[1];
      if (anchor !== (a.alert as string).toLowerCase() || !headings.has(anchor)) p.push(`${a.alert}: runbook_url ${a.annotations?.runbook_url}`);
      return p;
    });
    expect(alerts.length).toBeGreaterThan(10);
    expect(problems).toEqual([]);
  });

  it('has a promtool case where each alert fires and one where it must not', () => {
    interface AlertTest {
      alertname: string;
      exp_alerts?: unknown[];
    }
    const tests = (parse(readFileSync(RULE_TESTS, 'utf8')) as { tests: { alert_rule_test?: AlertTest[] }[] }).tests.flatMap((t) => t.alert_rule_test ?? []);
    const missing = alerts.flatMap((a) => {
      const cases = tests.filter((t) => t.alertname === a.alert);
      return [
        ...(cases.some((t) => (t.exp_alerts ?? []).length > 0) ? [] : [`${a.alert}: no case where it fires`]),
        ...(cases.some((t) => (t.exp_alerts ?? []).length === 0) ? [] : [`${a.alert}: no case where it stays quiet`]),
      ];
    });
    expect(missing).toEqual([]);
  });
});
