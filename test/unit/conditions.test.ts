import { describe, expect, it } from 'vitest';
import { type Condition, type ConditionContext, conditionSchema, evaluateConditions, parseConditions } from '../../src/conditions.ts';

const t = (iso: string) => Date.parse(iso);
// 2025-01-06 is a Monday.
const ctx = (over: Partial<ConditionContext> = {}): ConditionContext => ({
  remoteIp: '10.1.2.3',
  country: 'US',
  verified: true,
  nowMs: t('2025-01-06T10:00:00Z'),
  ...over,
});
const okOf = (c: Condition, over: Partial<ConditionContext> = {}) => evaluateConditions([c], ctx(over)).ok;
const ip = (operator: 'is_in_cidr' | 'is_not_in_cidr', values: string[]): Condition => ({
  property: 'remote_ip',
  operator,
  values,
});
const region = (operator: 'is_in' | 'is_not_in', values: string[]): Condition => ({
  property: 'remote_ip_location_region',
  operator,
  values,
});
const verified = (value: string): Condition => ({ property: 'client_verified', operator: 'is', values: [value] });
const windows = (...values: string[]): Condition => ({
  property: 'current_utc_datetime',
  operator: 'is_in_day_of_week_time_ranges',
  values,
});

describe('parseConditions', () => {
  it('reads null, undefined and [] as no conditions', () => {
    expect(parseConditions(null)).toEqual([]);
    expect(parseConditions(undefined)).toEqual([]);
    expect(parseConditions([])).toEqual([]);
  });

  it('accepts each property with valid values', () => {
    const all: Condition[] = [
      ip('is_in_cidr', ['10.0.0.0/8', '2001:db8::/32', '1.2.3.4', '::ffff:1.2.3.0/120']),
      ip('is_not_in_cidr', ['192.168.0.0/16']),
      region('is_in', ['US', 'de']),
      region('is_not_in', ['CN']),
      verified('true'),
      verified('false'),
      windows('M/09:00-17:00/America/New_York', 'U/true/UTC', 'F/22-02:30:15,08:00-09:00/Asia/Tokyo'),
    ];
    expect(parseConditions(all)).toEqual(all);
    expect(conditionSchema.safeParse(all[0]).success).toBe(true);
  });

  it('rejects non-arrays and unknown properties or operators', () => {
    for (const bad of [
      'M/true/UTC',
      42,
      {},
      { property: 'remote_ip', operator: 'is_in_cidr', values: ['10.0.0.0/8'] },
      [null],
      [{ property: 'remote_port', operator: 'is', values: ['22'] }],
      [{ property: 'remote_ip', operator: 'is_in', values: ['10.0.0.0/8'] }],
      [{ property: 'remote_ip_location_region', operator: 'is_in_cidr', values: ['US'] }],
      [{ property: 'client_verified', operator: 'is_not', values: ['true'] }],
      [{ property: 'current_utc_datetime', operator: 'is_in', values: ['M/true/UTC'] }],
      [{ operator: 'is', values: ['true'] }],
    ]) {
      expect(parseConditions(bad), JSON.stringify(bad)).toBeNull();
    }
  });

  it('rejects bad values', () => {
    const cases: Array<[string, string, unknown]> = [
      ['remote_ip', 'is_in_cidr', ['10.0.0.0/33']],
      ['remote_ip', 'is_in_cidr', ['10.0.0/8']],
      ['remote_ip', 'is_in_cidr', ['10.0.0.0/8', 'example.com']],
      ['remote_ip', 'is_not_in_cidr', []],
      ['remote_ip', 'is_in_cidr', '10.0.0.0/8'],
      ['remote_ip', 'is_in_cidr', [167772160]],
      ['remote_ip_location_region', 'is_in', ['USA']],
      ['remote_ip_location_region', 'is_in', ['U1']],
      ['client_verified', 'is', ['yes']],
      ['client_verified', 'is', [true]],
      ['client_verified', 'is', ['true', 'false']],
      ['client_verified', 'is', []],
      ['current_utc_datetime', 'is_in_day_of_week_time_ranges', ['X/true/UTC']],
      ['current_utc_datetime', 'is_in_day_of_week_time_ranges', ['M/true']],
      ['current_utc_datetime', 'is_in_day_of_week_time_ranges', ['M/true/']],
      ['current_utc_datetime', 'is_in_day_of_week_time_ranges', ['M/true/Mars/Olympus_Mons']],
      ['current_utc_datetime', 'is_in_day_of_week_time_ranges', ['M/09:00/UTC']],
      ['current_utc_datetime', 'is_in_day_of_week_time_ranges', ['M/25:00-26:00/UTC']],
      ['current_utc_datetime', 'is_in_day_of_week_time_ranges', ['M/true/UTC', 'T/9-17,/UTC']],
    ];
    for (const [property, operator, values] of cases) {
      expect(parseConditions([{ property, operator, values }]), `${property} ${JSON.stringify(values)}`).toBeNull();
    }
  });

  it('rejects unknown keys, since they may carry a restriction this code does not know', () => {
    expect(parseConditions([{ ...verified('true'), negate: true }])).toBeNull();
  });

  it('rejects the whole list when one condition is bad', () => {
    const badIp = { property: 'remote_ip', operator: 'is_in_cidr', values: ['x'] };
    expect(parseConditions([verified('true'), badIp])).toBeNull();
  });
});

describe('evaluateConditions', () => {
  it('holds for an empty list, forever', () => {
    expect(evaluateConditions([], ctx())).toEqual({ ok: true, until: null, changesAt: null });
  });

  it('remote_ip: is_in_cidr and is_not_in_cidr, v4, v6, mapped and bare addresses', () => {
    expect(okOf(ip('is_in_cidr', ['192.168.0.0/16', '10.0.0.0/8']))).toBe(true);
    expect(okOf(ip('is_in_cidr', ['192.168.0.0/16']))).toBe(false);
    expect(okOf(ip('is_not_in_cidr', ['192.168.0.0/16']))).toBe(true);
    expect(okOf(ip('is_not_in_cidr', ['192.168.0.0/16', '10.0.0.0/8']))).toBe(false);
    expect(okOf(ip('is_in_cidr', ['2001:db8::/32']), { remoteIp: '2001:db8::42' })).toBe(true);
    expect(okOf(ip('is_in_cidr', ['2001:db8::/32']), { remoteIp: '2001:db9::42' })).toBe(false);
    expect(okOf(ip('is_not_in_cidr', ['2001:db8::/32']), { remoteIp: '2001:db9::42' })).toBe(true);
    expect(okOf(ip('is_in_cidr', ['10.0.0.0/8']), { remoteIp: '::ffff:10.9.9.9' })).toBe(true);
    expect(okOf(ip('is_not_in_cidr', ['10.0.0.0/8']), { remoteIp: '::ffff:10.9.9.9' })).toBe(false);
    expect(okOf(ip('is_in_cidr', ['10.1.2.3']))).toBe(true);
    expect(okOf(ip('is_in_cidr', ['10.1.2.4']))).toBe(false);
    expect(okOf(ip('is_in_cidr', ['::/0']))).toBe(false);
  });

  it('remote_ip: an unknown or unreadable address holds for neither operator', () => {
    for (const remoteIp of [null, '', 'not-an-ip', '10.1.2', '10.1.2.3:443']) {
      expect(okOf(ip('is_in_cidr', ['0.0.0.0/0', '::/0']), { remoteIp }), String(remoteIp)).toBe(false);
      expect(okOf(ip('is_not_in_cidr', ['192.168.0.0/16']), { remoteIp }), String(remoteIp)).toBe(false);
    }
  });

  it('remote_ip: an unreadable block (input that skipped parseConditions) fails closed', () => {
    expect(okOf(ip('is_not_in_cidr', ['garbage']))).toBe(false);
  });

  it('remote_ip_location_region: both operators, case-insensitive, unknown country fails both', () => {
    expect(okOf(region('is_in', ['de', 'us']))).toBe(true);
    expect(okOf(region('is_in', ['DE']))).toBe(false);
    expect(okOf(region('is_not_in', ['DE']))).toBe(true);
    expect(okOf(region('is_not_in', ['us']))).toBe(false);
    expect(okOf(region('is_in', ['US']), { country: 'us' })).toBe(true);
    expect(okOf(region('is_in', ['US']), { country: null })).toBe(false);
    expect(okOf(region('is_not_in', ['US']), { country: null })).toBe(false);
    expect(okOf(region('is_not_in', ['US']), { country: '' })).toBe(false);
  });

  it('client_verified: "true" iff verified, "false" iff not', () => {
    expect(okOf(verified('true'), { verified: true })).toBe(true);
    expect(okOf(verified('true'), { verified: false })).toBe(false);
    expect(okOf(verified('false'), { verified: false })).toBe(true);
    expect(okOf(verified('false'), { verified: true })).toBe(false);
  });

  it('non-time conditions never end and never schedule', () => {
    expect(evaluateConditions([verified('true'), region('is_in', ['US'])], ctx())).toEqual({
      ok: true,
      until: null,
      changesAt: null,
    });
    expect(evaluateConditions([verified('false')], ctx())).toEqual({ ok: false, until: null, changesAt: null });
  });

  it('several time conditions: the earliest end, and the earliest boundary', () => {
    // Now is Monday 10:00Z.
    const workday = windows('M/09:00-17:00/UTC');
    const morning = windows('M/08:00-12:00/UTC');
    const lunch = windows('M/13:00-14:00/UTC');
    expect(evaluateConditions([workday, morning, verified('true')], ctx())).toEqual({
      ok: true,
      until: t('2025-01-06T12:00:01Z'),
      changesAt: t('2025-01-06T12:00:01Z'),
    });
    // One time condition closed: no grant, but its opening is still the next boundary.
    expect(evaluateConditions([workday, lunch], ctx())).toEqual({
      ok: false,
      until: null,
      changesAt: t('2025-01-06T13:00:00Z'),
    });
    // A failing non-time condition still leaves the time boundaries to schedule.
    expect(evaluateConditions([workday, verified('false')], ctx())).toEqual({
      ok: false,
      until: null,
      changesAt: t('2025-01-06T17:00:01Z'),
    });
    // A forever-true time condition adds no end.
    const always = windows(...[...'MTWRFSU'].map((d) => `${d}/true/UTC`));
    expect(evaluateConditions([always, workday], ctx())).toEqual({
      ok: true,
      until: t('2025-01-06T17:00:01Z'),
      changesAt: t('2025-01-06T17:00:01Z'),
    });
    expect(evaluateConditions([always], ctx())).toEqual({ ok: true, until: null, changesAt: null });
  });

  it('combines an IP condition and a zoned time condition', () => {
    // Monday 10:00Z is 05:00 in New York: outside 09:00-17:00 there, open at 14:00Z.
    const nyWorkday = windows('M/09:00-17:00/America/New_York');
    const office = ip('is_in_cidr', ['10.0.0.0/8']);
    expect(evaluateConditions([office, nyWorkday], ctx())).toEqual({
      ok: false,
      until: null,
      changesAt: t('2025-01-06T14:00:00Z'),
    });
    expect(evaluateConditions([office, nyWorkday], ctx({ nowMs: t('2025-01-06T15:00:00Z') }))).toEqual({
      ok: true,
      until: t('2025-01-06T22:00:01Z'),
      changesAt: t('2025-01-06T22:00:01Z'),
    });
    expect(evaluateConditions([office, nyWorkday], ctx({ nowMs: t('2025-01-06T15:00:00Z'), remoteIp: '8.8.8.8' }))).toEqual({
      ok: false,
      until: null,
      changesAt: t('2025-01-06T22:00:01Z'),
    });
  });
});
