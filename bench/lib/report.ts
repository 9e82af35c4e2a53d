// The table: one row per measurement, its target, the median of the runs with min and max.
import type { RunSummary } from './stats.js';

export interface Target {
  op: '<=' | '>=' | '==';
  value: number;
}

export interface Row {
  id: string;
  label: string;
  unit: string;
  target?: Target;
  summary: RunSummary;
  /** Whether the median of the runs meets the target (undefined: informational row). */
  met?: boolean;
  note?: string;
}

export function row(id: string, label: string, unit: string, summary: RunSummary, target?: Target, note?: string): Row {
  const met = target === undefined ? undefined : meets(summary.median, target);
  return { id, label, unit, summary, target, met, note };
}

function meets(v: number, t: Target): boolean {
  if (t.op === '<=') return v <= t.value;
  if (t.op === '>=') return v >= t.value;
  return v === t.value;
}

const fmt = (n: number) => (Number.isInteger(n) ? String(n) : Math.abs(n) >= 100 ? n.toFixed(0) : n.toFixed(1));
const op = (o: Target['op']) => (o === '<=' ? '≤' : o === '>=' ? '≥' : '=');

export function table(headers: string[], rows: string[][], align: Array<'l' | 'r'> = []): string {
  const widths = headers.map((h, i) => Math.max(h.length, ...rows.map((r) => (r[i] ?? '').length)));
  const line = (cells: string[]) =>
    cells.map((c, i) => ((align[i] ?? (i === 0 ? 'l' : 'r')) === 'l' ? c.padEnd(widths[i]!) : c.padStart(widths[i]!))).join('  ');
  return [line(headers), widths.map((w) => '-'.repeat(w)).join('  '), ...rows.map(line)].join('\n');
}

export function metricsTable(rows: Row[]): string {
  return table(
    ['measurement', 'target', 'median', 'min', 'max', 'runs', 'met'],
    rows.map((r) => [
      r.label,
      r.target ? `${op(r.target.op)} ${fmt(r.target.value)} ${r.unit}` : `(${r.unit})`,
      fmt(r.summary.median),
      fmt(r.summary.min),
      fmt(r.summary.max),
      String(r.summary.runs.length),
      r.met === undefined ? '-' : r.met ? 'yes' : 'NO',
    ]),
  );
}

export { fmt };
