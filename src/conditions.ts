/**
 * Policy conditions (docs/protocol.md#access-rule): parsing a policy's `conditions` and deciding whether they hold.
 * Anything we cannot read makes the policy grant nothing (fail closed), including unknown keys, since
 * they may carry a restriction newer than this code.
 */
import { z } from 'zod';
import { cidrContains, parseCidr, parseIp } from './cidr.ts';
import { evaluateTimeWindows, parseTimeWindow } from './time-windows.ts';

export type Condition =
  | { property: 'remote_ip'; operator: 'is_in_cidr' | 'is_not_in_cidr'; values: string[] }
  | { property: 'remote_ip_location_region'; operator: 'is_in' | 'is_not_in'; values: string[] }
  | { property: 'client_verified'; operator: 'is'; values: string[] }
  | { property: 'current_utc_datetime'; operator: 'is_in_day_of_week_time_ranges'; values: string[] };

// An empty list is refused rather than read: `is_not_in_cidr []` would otherwise grant from anywhere.
// At most 64 values of at most 255 characters (docs/protocol.md#limits): more fails closed too.
const values = (valid: (v: string) => boolean, what: string) =>
  z
    .array(
      z
        .string()
        .max(255)
        .refine(valid, { message: `not ${what}` }),
    )
    .min(1)
    .max(64);

export const conditionSchema: z.ZodType<Condition> = z.discriminatedUnion('property', [
  z.strictObject({
    property: z.literal('remote_ip'),
    operator: z.enum(['is_in_cidr', 'is_not_in_cidr']),
    values: values((v) => parseCidr(v) !== null, 'a CIDR or IP address'),
  }),
  z.strictObject({
    property: z.literal('remote_ip_location_region'),
    operator: z.enum(['is_in', 'is_not_in']),
    values: values((v) => /^[A-Za-z]{2}$/.test(v), 'an ISO 3166 alpha-2 country code'),
  }),
  z.strictObject({
    property: z.literal('client_verified'),
    operator: z.literal('is'),
    values: z.array(z.enum(['true', 'false'])).length(1),
  }),
  z.strictObject({
    property: z.literal('current_utc_datetime'),
    operator: z.literal('is_in_day_of_week_time_ranges'),
    values: values((v) => parseTimeWindow(v) !== null, 'a D/RANGES/ZONE window'),
  }),
]);

const conditionsSchema = z.array(conditionSchema).max(64);

/**
 * Parses a policy's `conditions` jsonb value (already JSON-parsed; null/undefined means []).
 * Returns null when anything is invalid: such a policy grants nothing (fail closed).
 */
export function parseConditions(value: unknown): Condition[] | null {
  if (value === null || value === undefined) return [];
  const result = conditionsSchema.safeParse(value);
  return result.success ? result.data : null;
}

export interface ConditionContext {
  remoteIp: string | null;
  country: string | null;
  verified: boolean;
  nowMs: number;
}

export interface ConditionOutcome {
  /** Every condition holds now. */
  ok: boolean;
  /** When ok: epoch ms (exclusive) when the grant ends, the earliest end among time conditions; null = no end.
   *  Null when not ok. */
  until: number | null;
  /** Next instant after nowMs at which a time condition may flip (whether or not it holds now); null = never. */
  changesAt: number | null;
}

function minOrNull(a: number | null, b: number | null): number | null {
  if (a === null) return b;
  if (b === null) return a;
  return Math.min(a, b);
}

/** The non-time conditions. Unknown inputs (no IP, no country) hold for neither operator. */
function holds(c: Condition, ctx: ConditionContext): boolean {
  switch (c.property) {
    case 'remote_ip': {
      const ip = ctx.remoteIp === null ? null : parseIp(ctx.remoteIp);
      if (!ip) return false;
      const cidrs = c.values.map(parseCidr);
      // Only reachable when the caller skipped parseConditions: an unreadable block decides nothing.
      if (cidrs.includes(null)) return false;
      const inside = cidrs.some((cidr) => cidr !== null && cidrContains(cidr, ip));
      return c.operator === 'is_in_cidr' ? inside : !inside;
    }
    case 'remote_ip_location_region': {
      if (!ctx.country) return false;
      const country = ctx.country.toUpperCase();
      const inside = c.values.some((v) => v.toUpperCase() === country);
      return c.operator === 'is_in' ? inside : !inside;
    }
    case 'client_verified':
      return c.values.length === 1 && c.values[0] === String(ctx.verified);
    case 'current_utc_datetime':
      return evaluateTimeWindows(c.values, ctx.nowMs).ok;
  }
}

export function evaluateConditions(conditions: readonly Condition[], ctx: ConditionContext): ConditionOutcome {
  let ok = true;
  let until: number | null = null;
  let changesAt: number | null = null;
  for (const c of conditions) {
    if (c.property === 'current_utc_datetime') {
      const w = evaluateTimeWindows(c.values, ctx.nowMs);
      ok &&= w.ok;
      until = minOrNull(until, w.until);
      changesAt = minOrNull(changesAt, w.changesAt);
    } else {
      ok &&= holds(c, ctx);
    }
  }
  return { ok, until: ok ? until : null, changesAt };
}
