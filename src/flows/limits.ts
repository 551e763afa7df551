import { z } from 'zod';
import { amountSetting as amount, countSetting as count, readSettings } from '../settings.ts';

/**
 * What bounds the flows a device can make (docs/protocol.md#limits), read from the Worker's
 * variables (`[vars]` or the dashboard), all prefixed `FLOW_`. Unset or empty: the default.
 */
export const flowLimitsSchema = z.object({
  FLOW_RATE_PER_SECOND: amount('create_flow requests a socket may make per second, sustained (a token bucket refilled at this rate); 0 turns the limit off', 10),
  FLOW_BURST: count('create_flow requests a socket may make at once (the bucket size)', 100, 1),
  FLOW_MAX_PER_CLIENT: count("live flows per client; a new flow beyond it replaces the client's least recently created one", 1000, 1),
  FLOW_LOG_BACKLOG_MAX: count('flows waiting for Postgres in the object; beyond it create_flow is refused until the flow log catches up', 100_000, 1),
  FLOW_RETENTION_DAYS: amount("rows of Postgres `flows` older than this are deleted by their account's object; 0 keeps them", 30),
});

export interface FlowLimits {
  /** Tokens per second; 0: no rate limit. */
  ratePerSecond: number;
  burst: number;
  maxPerClient: number;
  logBacklogMax: number;
  /** null: keep the flow log forever. */
  retentionMs: number | null;
}

export class FlowLimitsError extends Error {
  override name = 'FlowLimitsError';
}

/** The limits from the Worker's environment; an invalid value throws, naming the variable and what it means. */
export function readFlowLimits(env: Record<string, unknown>): FlowLimits {
  const read = readSettings(flowLimitsSchema, env);
  if (!read.ok) throw new FlowLimitsError(`invalid flow limits: ${read.problems}`);
  const v = read.value;
  return {
    ratePerSecond: v.FLOW_RATE_PER_SECOND,
    burst: v.FLOW_BURST,
    maxPerClient: v.FLOW_MAX_PER_CLIENT,
    logBacklogMax: v.FLOW_LOG_BACKLOG_MAX,
    retentionMs: v.FLOW_RETENTION_DAYS === 0 ? null : v.FLOW_RETENTION_DAYS * 86_400_000,
  };
}
