/** Small statistics and formatting helpers of the edge benchmark. */

/** The p-th percentile (0-100) by nearest rank. */
export function percentile(values: readonly number[], p: number): number {
  if (values.length === 0) return NaN;
  const sorted = [...values].sort((a, b) => a - b);
  const rank = Math.min(sorted.length, Math.max(1, Math.ceil((p / 100) * sorted.length)));
  return sorted[rank - 1]!;
}

export const median = (values: readonly number[]) => percentile(values, 50);
export const worst = (values: readonly number[]) => Math.max(...values);

export function ms(v: number): string {
  if (!Number.isFinite(v)) return String(v);
  return v < 10 ? `${v.toFixed(2)} ms` : v < 100 ? `${v.toFixed(1)} ms` : `${Math.round(v)} ms`;
}

export function fmt(n: number): string {
  return Math.round(n).toLocaleString('en-US');
}

/** `p50 x, p90 y, p99 z, max w` of a latency sample. */
export function spread(values: readonly number[]): string {
  return `p50 ${ms(percentile(values, 50))}, p90 ${ms(percentile(values, 90))}, p99 ${ms(percentile(values, 99))}, max ${ms(worst(values))} (n=${values.length})`;
}

export function sleep(msToWait: number): Promise<void> {
  return new Promise((r) => setTimeout(r, msToWait));
}
