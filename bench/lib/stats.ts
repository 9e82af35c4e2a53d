// Small statistics helpers for the benchmark: nearest-rank percentiles, and a
// "several runs" summary (median of the per-run values, with min and max).

export function percentile(values: readonly number[], p: number): number {
  if (values.length === 0) return Number.NaN;
  const sorted = [...values].sort((a, b) => a - b);
  const rank = Math.min(sorted.length, Math.max(1, Math.ceil((p / 100) * sorted.length)));
  return sorted[rank - 1]!;
}

export const median = (values: readonly number[]) => {
  if (values.length === 0) return Number.NaN;
  const sorted = [...values].sort((a, b) => a - b);
  const mid = sorted.length >> 1;
  return sorted.length % 2 ? sorted[mid]! : (sorted[mid - 1]! + sorted[mid]!) / 2;
};

export interface RunSummary {
  /** The value of each run (e.g. each run's p99). */
  runs: number[];
  median: number;
  min: number;
  max: number;
}

export function summarize(runs: number[]): RunSummary {
  return { runs: runs.map(round), median: round(median(runs)), min: round(Math.min(...runs)), max: round(Math.max(...runs)) };
}

export function round(n: number, digits = 2): number {
  if (!Number.isFinite(n)) return n;
  const f = 10 ** digits;
  return Math.round(n * f) / f;
}
