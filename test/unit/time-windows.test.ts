import { describe, expect, it } from 'vitest';
import { LOOKAHEAD_MS, evaluateTimeWindows, parseTimeWindow } from '../../src/time-windows.ts';

const t = (iso: string) => {
  const ms = Date.parse(iso);
  if (Number.isNaN(ms)) throw new Error(`bad test instant ${iso}`);
  return ms;
};
const at = (values: string[], iso: string) => evaluateTimeWindows(values, t(iso));
const holding = (until: string, changesAt = until) => ({ ok: true, until: t(until), changesAt: t(changesAt) });
const closed = (changesAt: string) => ({ ok: false, until: null, changesAt: t(changesAt) });

// 2025-01-06 is a Monday; New York is UTC-5 and Tokyo UTC+9 in January.
describe('parseTimeWindow', () => {
  it('reads days, ranges, `true` and the zone after the second slash (as seconds from Monday 00:00)', () => {
    expect(parseTimeWindow('M/09:00-17:00/America/New_York')).toEqual([{ zone: 'America/New_York', start: 9 * 3600, end: 17 * 3600 + 1 }]);
    expect(parseTimeWindow('T/true/UTC')).toEqual([{ zone: 'UTC', start: 86_400, end: 2 * 86_400 }]);
    expect(parseTimeWindow('U/22-2:30:15,8:05-9/Etc/GMT+5')).toEqual([
      { zone: 'Etc/GMT+5', start: 6 * 86_400 + 22 * 3600, end: 7 * 86_400 + 2 * 3600 + 30 * 60 + 16 },
      { zone: 'Etc/GMT+5', start: 6 * 86_400 + 8 * 3600 + 5 * 60, end: 6 * 86_400 + 9 * 3600 + 1 },
    ]);
    expect(parseTimeWindow('R/12:00-12:00/Asia/Tokyo')).toEqual([{ zone: 'Asia/Tokyo', start: 3 * 86_400 + 12 * 3600, end: 3 * 86_400 + 12 * 3600 + 1 }]);
  });

  it('canonicalizes zone spellings so they group together', () => {
    expect(parseTimeWindow('F/true/utc')?.[0]?.zone).toBe('UTC');
    expect(parseTimeWindow('F/true/Etc/UTC')?.[0]?.zone).toBe('UTC');
  });

  it('refuses bad days, zones and ranges', () => {
    for (const bad of [
      'X/true/UTC',
      'm/true/UTC',
      'MT/true/UTC',
      '/true/UTC',
      'M/true',
      'M/true/',
      'M/true/Not/A_Zone',
      'M/true/+05:00',
      'M/TRUE/UTC',
      'M//UTC',
      'M/09:00/UTC',
      'M/09:00-/UTC',
      'M/-17:00/UTC',
      'M/09:00-17:00,/UTC',
      'M/09:00-10:00-11:00/UTC',
      'M/24:00-23:00/UTC',
      'M/09:60-10:00/UTC',
      'M/09:00-10:00:60/UTC',
      'M/9:0-10/UTC',
      'M/123-10/UTC',
      'M/ 09:00-17:00/UTC',
      'M/09.00-17.00/UTC',
    ]) {
      expect(parseTimeWindow(bad), bad).toBeNull();
    }
  });
});

describe('evaluateTimeWindows', () => {
  const workday = ['M/09:00-17:00/UTC'];

  it('holds inside a range, inclusive of its last second', () => {
    expect(at(workday, '2025-01-06T08:59:59.999Z')).toEqual(closed('2025-01-06T09:00:00Z'));
    expect(at(workday, '2025-01-06T09:00:00Z')).toEqual(holding('2025-01-06T17:00:01Z'));
    expect(at(workday, '2025-01-06T17:00:00.999Z')).toEqual(holding('2025-01-06T17:00:01Z'));
    // Closed at 17:00:01; the next opening is a week later.
    expect(at(workday, '2025-01-06T17:00:01Z')).toEqual(closed('2025-01-13T09:00:00Z'));
    expect(at(workday, '2025-01-07T12:00:00Z')).toEqual(closed('2025-01-13T09:00:00Z'));
  });

  it('reads HH and HH:MM:SS', () => {
    expect(at(['M/9-17:30:15/UTC'], '2025-01-06T12:00:00Z')).toEqual(holding('2025-01-06T17:30:16Z'));
  });

  it('`true` covers the whole day', () => {
    expect(at(['M/true/UTC'], '2025-01-05T23:59:59.999Z')).toEqual(closed('2025-01-06T00:00:00Z'));
    expect(at(['M/true/UTC'], '2025-01-06T00:00:00Z')).toEqual(holding('2025-01-07T00:00:00Z'));
    expect(at(['M/true/UTC'], '2025-01-06T23:59:59.999Z')).toEqual(holding('2025-01-07T00:00:00Z'));
  });

  it('runs a range whose start is after its end into the next day, including Sunday into Monday', () => {
    const friNight = ['F/22:00-02:00/UTC'];
    expect(at(friNight, '2025-01-10T21:00:00Z')).toEqual(closed('2025-01-10T22:00:00Z'));
    expect(at(friNight, '2025-01-10T23:00:00Z')).toEqual(holding('2025-01-11T02:00:01Z'));
    expect(at(friNight, '2025-01-11T01:00:00Z')).toEqual(holding('2025-01-11T02:00:01Z'));
    expect(at(friNight, '2025-01-11T03:00:00Z')).toEqual(closed('2025-01-17T22:00:00Z'));
    expect(at(['U/22:00-02:00/UTC'], '2025-01-06T01:00:00Z')).toEqual(holding('2025-01-06T02:00:01Z'));
  });

  it('merges overlapping and adjacent ranges, and days across midnight', () => {
    expect(at(['M/09:00-12:00,11:00-13:00,13:00:01-14:00/UTC'], '2025-01-06T10:00:00Z')).toEqual(holding('2025-01-06T14:00:01Z'));
    const evening = ['M/20:00-23:59:59/UTC', 'T/00:00-02:00/UTC'];
    expect(at(evening, '2025-01-06T21:00:00Z')).toEqual(holding('2025-01-07T02:00:01Z'));
    // The same in New York: Monday 21:00 local is Tuesday 02:00Z; it ends Tuesday 02:00:01 local.
    const nyEvening = ['M/20:00-23:59:59/America/New_York', 'T/00:00-02:00/America/New_York'];
    expect(at(nyEvening, '2025-01-07T02:00:00Z')).toEqual(holding('2025-01-07T07:00:01Z'));
    // A gap of one second is not merged.
    expect(at(['M/20:00-23:59:58/UTC', 'T/00:00-02:00/UTC'], '2025-01-06T21:00:00Z')).toEqual(holding('2025-01-06T23:59:59Z'));
  });

  it('reads days and times in the value’s zone', () => {
    // 2025-01-06T14:00Z: Monday 09:00 in New York, Monday 23:00 in Tokyo, Monday 14:00 in UTC.
    const now = '2025-01-06T14:00:00Z';
    expect(at(['M/09:00-17:00/America/New_York'], now)).toEqual(holding('2025-01-06T22:00:01Z'));
    expect(at(['M/09:00-17:00/Asia/Tokyo'], now)).toEqual(closed('2025-01-13T00:00:00Z'));
    expect(at(['M/09:00-17:00/UTC'], now)).toEqual(holding('2025-01-06T17:00:01Z'));
    expect(at(['M/23:00-23:30/Asia/Tokyo'], now)).toEqual(holding('2025-01-06T14:30:01Z'));
    // Values in different zones merge into one stretch: Tokyo's Monday evening then UTC's afternoon.
    expect(at(['M/22:00-23:59:59/Asia/Tokyo', 'M/14:59:59-16:00/UTC'], now)).toEqual(holding('2025-01-06T16:00:01Z'));
  });

  it('handles a window that crosses UTC midnight', () => {
    // Monday 20:00-23:00 New York is Tuesday 01:00-04:00Z.
    const w = ['M/20:00-23:00/America/New_York'];
    expect(at(w, '2025-01-06T23:00:00Z')).toEqual(closed('2025-01-07T01:00:00Z'));
    expect(at(w, '2025-01-07T02:00:00Z')).toEqual(holding('2025-01-07T04:00:01Z'));
    expect(at(['T/true/America/New_York'], '2025-01-07T02:00:00Z')).toEqual(closed('2025-01-07T05:00:00Z'));
  });

  it('follows spring-forward: skipped wall times never occur', () => {
    // 2025-03-09 (Sunday), New York: 02:00 EST (07:00Z) jumps to 03:00 EDT.
    const across = ['U/01:00-03:30/America/New_York'];
    expect(at(across, '2025-03-09T06:30:00Z')).toEqual(holding('2025-03-09T07:30:01Z'));
    expect(at(['U/true/America/New_York'], '2025-03-09T12:00:00Z')).toEqual(holding('2025-03-10T04:00:00Z'));
    // 02:00-02:59:59 does not exist that day; the next one is a week later, at 02:00 EDT.
    const skipped = ['U/02:00-02:59:59/America/New_York'];
    expect(at(skipped, '2025-03-09T06:59:59Z')).toEqual(closed('2025-03-16T06:00:00Z'));
  });

  it('follows fall-back: repeated wall times are covered on both passes', () => {
    // 2025-11-02 (Sunday), New York: 02:00 EDT (06:00Z) falls back to 01:00 EST.
    const w = ['U/01:00-01:30/America/New_York'];
    expect(at(w, '2025-11-02T04:59:59Z')).toEqual(closed('2025-11-02T05:00:00Z'));
    expect(at(w, '2025-11-02T05:10:00Z')).toEqual(holding('2025-11-02T05:30:01Z'));
    expect(at(w, '2025-11-02T05:45:00Z')).toEqual(closed('2025-11-02T06:00:00Z'));
    expect(at(w, '2025-11-02T06:10:00Z')).toEqual(holding('2025-11-02T06:30:01Z'));
    expect(at(['U/true/America/New_York'], '2025-11-02T12:00:00Z')).toEqual(holding('2025-11-03T05:00:00Z'));
  });

  it('a week covered in one zone never ends', () => {
    const always = { ok: true, until: null, changesAt: null };
    const days = [...'MTWRFSU'];
    expect(
      at(
        days.map((d) => `${d}/true/UTC`),
        '2025-01-06T12:00:00Z',
      ),
    ).toEqual(always);
    expect(
      at(
        days.map((d) => `${d}/true/America/New_York`),
        '2025-03-09T06:59:59Z',
      ),
    ).toEqual(always);
    expect(
      at(
        days.map((d) => `${d}/00:00-23:59:59/Asia/Tokyo`),
        '2025-01-06T12:00:00Z',
      ),
    ).toEqual(always);
    // Six days are not a week: the stretch ends Sunday 00:00.
    expect(
      at(
        days.slice(0, 6).map((d) => `${d}/true/UTC`),
        '2025-01-06T12:00:00Z',
      ),
    ).toEqual(holding('2025-01-12T00:00:00Z'));
  });

  it('reports the look-ahead end for a stretch that outlasts it without covering the week in one zone', () => {
    const split = [...'MTWRFS'].map((d) => `${d}/true/UTC`).concat('U/true/Europe/London');
    // In winter London is UTC, so the week is covered; the answer is "re-check in 8 days".
    const now = t('2025-01-08T12:00:00Z');
    const recheck = now + LOOKAHEAD_MS;
    expect(evaluateTimeWindows(split, now)).toEqual({ ok: true, until: recheck, changesAt: recheck });
    // In summer London's Sunday ends at 23:00Z, an hour before UTC's Monday.
    expect(at(split, '2025-07-09T12:00:00Z')).toEqual(holding('2025-07-13T23:00:00Z'));
  });

  it('fails closed on an unreadable value', () => {
    const failed = { ok: false, until: null, changesAt: null };
    expect(at(['M/true/UTC', 'M/true/Nowhere'], '2025-01-06T12:00:00Z')).toEqual(failed);
  });
});

describe('evaluateTimeWindows against the wall clock', () => {
  // Cross-check with a direct reading of Intl at each instant, around 2025's DST transitions of
  // zones with one-hour, half-hour (Lord Howe), midnight (Santiago) and Ramadan (Casablanca) changes.
  const zones = ['America/New_York', 'Australia/Lord_Howe', 'America/Santiago', 'Africa/Casablanca'];
  zones.push('Pacific/Chatham');
  const HOUR = 3_600_000;
  let seed = 7;
  const rnd = () => (seed = (seed * 1_103_515_245 + 12_345) & 0x7fffffff) / 0x7fffffff;
  const int = (n: number) => Math.floor(rnd() * n);
  const readers = new Map<string, Intl.DateTimeFormat>();
  const wall = (zone: string, t: number) => {
    let f = readers.get(zone);
    if (!f) {
      f = new Intl.DateTimeFormat('en-US', {
        timeZone: zone,
        hourCycle: 'h23',
        weekday: 'short',
        hour: 'numeric',
        minute: 'numeric',
        second: 'numeric',
        timeZoneName: 'longOffset',
      });
      readers.set(zone, f);
    }
    const p = Object.fromEntries(f.formatToParts(t).map((x) => [x.type, x.value]));
    return {
      day: ['Mon', 'Tue', 'Wed', 'Thu', 'Fri', 'Sat', 'Sun'].indexOf(p.weekday!),
      sec: Number(p.hour) * 3600 + Number(p.minute) * 60 + Number(p.second),
      offset: p.timeZoneName!,
    };
  };
  type Spec = { day: number; ranges: Array<[number, number]> | 'all' };
  const holdsAt = (zone: string, specs: Spec[], t: number) => {
    const w = wall(zone, t);
    return specs.some(({ day, ranges }) =>
      ranges === 'all'
        ? w.day === day
        : ranges.some(([s, e]) => (s <= e ? w.day === day && s <= w.sec && w.sec <= e : (w.day === day && w.sec >= s) || (w.day === (day + 1) % 7 && w.sec <= e))),
    );
  };
  const hms = (x: number) => [x / 3600, (x / 60) % 60, x % 60].map((n) => String(Math.floor(n)).padStart(2, '0')).join(':');
  // Most ranges sit between 22:00 and 04:00, where transitions happen.
  const clock = () => (rnd() < 0.6 ? (22 * 3600 + int(6 * 3600)) % 86_400 : int(86_400));

  it.each(zones)('%s', (zone) => {
    const transitions: number[] = [];
    for (let t = Date.UTC(2025, 0, 1); t < Date.UTC(2026, 0, 1); t += HOUR) {
      if (wall(zone, t).offset !== wall(zone, t + HOUR).offset) transitions.push(t + HOUR);
    }
    expect(transitions.length).toBeGreaterThanOrEqual(2);
    for (let i = 0; i < 100; i++) {
      const specs: Spec[] = Array.from({ length: 1 + int(3) }, () => ({
        day: int(7),
        ranges: rnd() < 0.15 ? 'all' : Array.from({ length: 1 + int(2) }, (): [number, number] => [clock(), clock()]),
      }));
      const values = specs.map(({ day, ranges }) => {
        const text = ranges === 'all' ? 'true' : ranges.map(([s, e]) => `${hms(s)}-${hms(e)}`).join(',');
        return `${'MTWRFSU'[day]}/${text}/${zone}`;
      });
      const now = transitions[int(transitions.length)]! - int(8 * 24) * HOUR - int(HOUR);
      const r = evaluateTimeWindows(values, now);
      const label = `${values.join(' ')} at ${new Date(now).toISOString()}`;
      expect(r.ok, label).toBe(holdsAt(zone, specs, now));
      expect(r.changesAt, label).not.toBeNull();
      const next = r.changesAt!;
      expect(next, label).toBeGreaterThan(now);
      if (next < now + LOOKAHEAD_MS) {
        expect(holdsAt(zone, specs, next), label).toBe(!r.ok);
        expect(holdsAt(zone, specs, next - 1000), label).toBe(r.ok);
      }
      expect(r.until, label).toBe(r.ok ? next : null);
      for (let k = 0; k < 10; k++) {
        const x = now + int(next - now);
        expect(holdsAt(zone, specs, x), `${label}, probing ${new Date(x).toISOString()}`).toBe(r.ok);
      }
    }
  });
});
