/**
 * `current_utc_datetime` windows: values `D/RANGES/ZONE` (docs/protocol.md#access-rule), evaluated against an instant.
 *
 * A value holds at instant t iff the wall clock in ZONE at t, read to the second, shows day D and a
 * time inside one of the ranges. That definition settles DST without a choice of disambiguation:
 * wall times skipped by a spring-forward gap never occur, so a range inside a gap covers nothing
 * that day; wall times repeated by a fall-back overlap occur twice, and both passes are covered.
 *
 * Wall time is read with Intl (no tz database of our own): we sample the zone's UTC offset, bisect
 * where it changes, and map each window through every constant-offset period it touches.
 */

const SECOND = 1000;
const DAY_S = 86_400;
const WEEK_S = 7 * DAY_S;
const DAY_MS = DAY_S * SECOND;
const WEEK_MS = WEEK_S * SECOND;
/** How far ahead `until` and `changesAt` are looked for. */
export const LOOKAHEAD_MS = 8 * DAY_MS;
/** Offset sampling step. Zones never change offset twice within it, so no transition is missed. */
const SAMPLE_MS = 6 * 3600 * SECOND;

const DAYS = 'MTWRFSU';
const TIME = /^(\d{1,2})(?::(\d{2})(?::(\d{2}))?)?$/;
// Names only: Intl in newer runtimes also accepts offsets like "+05:00", which are not IANA zones.
const ZONE_NAME = /^[A-Za-z][A-Za-z0-9_+-]*(?:\/[A-Za-z0-9_+-]+)*$/;

/** Seconds from Monday 00:00:00 local; `end` is exclusive and may pass the end of the week (a wrap into Monday). */
export interface WeekWindow {
  zone: string;
  start: number;
  end: number;
}

export interface WindowOutcome {
  ok: boolean;
  until: number | null;
  changesAt: number | null;
}

// Per isolate: constructing a DateTimeFormat and resolving its options are the slow parts of Intl.
const formatters = new Map<string, Intl.DateTimeFormat | null>();
const canonical = new Map<string, string | null>();
const MAX_ZONES = 1024;

function formatter(zone: string): Intl.DateTimeFormat | null {
  let f = formatters.get(zone);
  if (f === undefined) {
    try {
      f = new Intl.DateTimeFormat('en-US', {
        timeZone: zone,
        hourCycle: 'h23',
        year: 'numeric',
        month: 'numeric',
        day: 'numeric',
        hour: 'numeric',
        minute: 'numeric',
        second: 'numeric',
      });
    } catch {
      f = null; // RangeError: not a zone this runtime knows
    }
    if (formatters.size >= MAX_ZONES) formatters.clear(); // bounded even if fed many bad names
    formatters.set(zone, f);
  }
  return f;
}

/** The canonical IANA name ("utc" and "Etc/UTC" both give "UTC"), or null when not a zone. */
export function canonicalZone(zone: string): string | null {
  let name = canonical.get(zone);
  if (name === undefined) {
    name = ZONE_NAME.test(zone) ? (formatter(zone)?.resolvedOptions().timeZone ?? null) : null;
    if (canonical.size >= MAX_ZONES) canonical.clear();
    canonical.set(zone, name);
  }
  return name;
}

/** Wall time minus UTC at the whole second containing t. */
function offsetAt(f: Intl.DateTimeFormat, t: number): number {
  const at = Math.floor(t / SECOND) * SECOND;
  const p: Record<string, number> = {};
  for (const part of f.formatToParts(at)) p[part.type] = Number(part.value);
  const wall = Date.UTC(p.year!, p.month! - 1, p.day!, p.hour!, p.minute!, p.second!);
  return wall - at;
}

interface Period {
  from: number;
  to: number;
  offset: number;
}

/** A SAMPLE_MS cell of a zone's timeline: its offset at the start, and the transition inside it if any. */
interface Cell {
  offset: number;
  change: { at: number; offset: number } | null;
}

// Cells are cached: offsets of the past and near future do not change, and Intl calls dominate the
// cost otherwise (~0.6 ms per evaluation). Cleared wholesale when large; a refill is cheap.
const cells = new Map<string, Cell>();
const MAX_CELLS = 4096;

function cellAt(zone: string, f: Intl.DateTimeFormat, k: number): Cell {
  const key = `${zone} ${k}`;
  let c = cells.get(key);
  if (c) return c;
  let lo = k * SAMPLE_MS;
  let hi = lo + SAMPLE_MS;
  const offset = offsetAt(f, lo);
  const after = offsetAt(f, hi);
  if (after === offset) {
    c = { offset, change: null };
  } else {
    // Bisect to the first second with the new offset.
    while (hi - lo > SECOND) {
      const mid = lo + Math.floor((hi - lo) / 2 / SECOND) * SECOND;
      if (offsetAt(f, mid) === offset) lo = mid;
      else hi = mid;
    }
    c = { offset, change: { at: hi, offset: offsetAt(f, hi) } };
  }
  if (cells.size >= MAX_CELLS) cells.clear();
  cells.set(key, c);
  return c;
}

/** Constant-offset periods covering [from, to). */
function periods(zone: string, f: Intl.DateTimeFormat, from: number, to: number): Period[] {
  const out: Period[] = [];
  const first = cellAt(zone, f, Math.floor(from / SAMPLE_MS));
  let offset = first.change && first.change.at <= from ? first.change.offset : first.offset;
  let start = from;
  for (let k = Math.floor(from / SAMPLE_MS); k * SAMPLE_MS < to; k++) {
    const { change } = cellAt(zone, f, k);
    if (change && change.at > from && change.at < to) {
      out.push({ from: start, to: change.at, offset });
      start = change.at;
      offset = change.offset;
    }
  }
  out.push({ from: start, to, offset });
  return out;
}

function parseTime(text: string): number | null {
  const m = TIME.exec(text);
  if (!m) return null;
  const h = Number(m[1]);
  const min = Number(m[2] ?? 0);
  const s = Number(m[3] ?? 0);
  if (h > 23 || min > 59 || s > 59) return null;
  return h * 3600 + min * 60 + s;
}

/** One value, e.g. "M/09:00-17:00,22:00-02:00/America/New_York"; null when any part is malformed. */
export function parseTimeWindow(text: string): WeekWindow[] | null {
  const a = text.indexOf('/');
  const b = text.indexOf('/', a + 1);
  if (a !== 1 || b < 0) return null;
  const day = DAYS.indexOf(text[0]!);
  const zone = canonicalZone(text.slice(b + 1));
  if (day < 0 || zone === null) return null;
  const base = day * DAY_S;
  const ranges = text.slice(a + 1, b);
  if (ranges === 'true') return [{ zone, start: base, end: base + DAY_S }];
  const out: WeekWindow[] = [];
  for (const range of ranges.split(',')) {
    const ends = range.split('-');
    if (ends.length !== 2) return null;
    const s = parseTime(ends[0]!);
    const e = parseTime(ends[1]!);
    if (s === null || e === null) return null;
    // Inclusive end at second precision, hence +1; a start after the end runs into the next day.
    out.push({ zone, start: base + s, end: base + (e >= s ? e : DAY_S + e) + 1 });
  }
  return out;
}

type Interval = [number, number];

function merge(intervals: Interval[]): Interval[] {
  intervals.sort((x, y) => x[0] - y[0]);
  const out: Interval[] = [];
  for (const [s, e] of intervals) {
    const last = out[out.length - 1];
    if (last && s <= last[1]) last[1] = Math.max(last[1], e);
    else out.push([s, e]);
  }
  return out;
}

/** True when one zone's windows cover every second of the week: the condition then holds forever. */
function coversWeek(windows: readonly WeekWindow[]): boolean {
  const folded: Interval[] = [];
  for (const w of windows) {
    if (w.end <= WEEK_S) folded.push([w.start, w.end]);
    else folded.push([w.start, WEEK_S], [0, w.end - WEEK_S]);
  }
  const merged = merge(folded);
  return merged.length === 1 && merged[0]![0] === 0 && merged[0]![1] >= WEEK_S;
}

function mod(a: number, n: number): number {
  return ((a % n) + n) % n;
}

/** Monday 00:00 of the week containing a local-time value (local wall time written as if UTC). */
function weekStart(local: number): number {
  const dayStart = local - mod(local, DAY_MS);
  const weekday = (new Date(dayStart).getUTCDay() + 6) % 7;
  return dayStart - weekday * DAY_MS;
}

/** Instants in [from, to) at which one zone's windows hold, unmerged. */
function zoneIntervals(zone: string, windows: readonly WeekWindow[], from: number, to: number): Interval[] {
  const f = formatter(zone);
  if (!f) return [];
  const out: Interval[] = [];
  for (const p of periods(zone, f, from, to)) {
    // A wrapping window starts in the week before the one it reaches into, hence the extra week.
    for (let w = weekStart(p.from + p.offset) - WEEK_MS; w < p.to + p.offset; w += WEEK_MS) {
      for (const win of windows) {
        const s = Math.max(w + win.start * SECOND - p.offset, p.from);
        const e = Math.min(w + win.end * SECOND - p.offset, p.to);
        if (s < e) out.push([s, e]);
      }
    }
  }
  return out;
}

/**
 * Whether any value holds at nowMs, until when (the end of the covered stretch containing now,
 * merged across midnight, values and zones), and the next boundary after now. Nothing is looked
 * for past LOOKAHEAD_MS: a stretch or a wait that reaches it reports it as `until`/`changesAt`, so
 * the caller re-evaluates then. Only a week fully covered in one zone gives null for both.
 * Unparseable values make the condition fail (fail closed) with nothing to wait for.
 */
export function evaluateTimeWindows(values: readonly string[], nowMs: number): WindowOutcome {
  const byZone = new Map<string, WeekWindow[]>();
  for (const value of values) {
    const parsed = parseTimeWindow(value);
    if (!parsed) return { ok: false, until: null, changesAt: null };
    for (const w of parsed) {
      const list = byZone.get(w.zone) ?? [];
      list.push(w);
      byZone.set(w.zone, list);
    }
  }
  for (const windows of byZone.values()) {
    if (coversWeek(windows)) return { ok: true, until: null, changesAt: null };
  }
  const horizon = nowMs + LOOKAHEAD_MS;
  const from = Math.floor(nowMs / SECOND) * SECOND;
  const to = Math.ceil(horizon / SECOND) * SECOND;
  const all: Interval[] = [];
  for (const [zone, windows] of byZone) all.push(...zoneIntervals(zone, windows, from, to));
  const merged = merge(all).map(([s, e]): Interval => [s, Math.min(e, horizon)]);
  const current = merged.find(([s, e]) => s <= nowMs && nowMs < e);
  let changesAt = horizon;
  for (const [s, e] of merged) {
    if (s > nowMs) changesAt = Math.min(changesAt, s);
    if (e > nowMs) changesAt = Math.min(changesAt, e);
  }
  return { ok: current !== undefined, until: current ? current[1] : null, changesAt };
}
