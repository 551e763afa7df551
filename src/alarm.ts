import type { AccountState } from './access/account-state.ts';
import { nextTimeBoundary } from './access/access.ts';
import { Dirty } from './access/dirty.ts';
import { earliest } from './flows/authorize.ts';
import type { FlowIndex } from './flows/flow-index.ts';

/**
 * What the clock may have changed by `nowMs`, for an alarm to push (docs/architecture.md#the-alarm:
 * token expiry and time windows are re-checked at the next boundary): every (actor, resource)
 * pair of a timed policy, every expired token, and the pair of every expired flow (its client,
 * when the client is gone). Alarms run at least once, so marking what turns out unchanged is fine.
 */
export function dueAt(state: AccountState, flows: FlowIndex, nowMs: number): Dirty {
  const dirty = new Dirty();
  for (const policyId of state.timedPolicies) {
    const p = state.policies.get(policyId);
    if (!p) continue;
    for (const actorId of state.actorsOfGroup.get(p.groupId)) dirty.pair(actorId, p.resourceId);
  }
  for (const token of state.tokens.values()) if (token.expiresAt !== null && token.expiresAt <= nowMs) dirty.tokens.add(token.id);
  for (const f of flows.flows.values()) {
    if (f.expiresAt === null || f.expiresAt > nowMs) continue;
    const client = state.clients.get(f.clientId);
    if (client) dirty.pair(client.actorId, f.resourceId);
    else dirty.clients.add(f.clientId);
  }
  return dirty;
}

export interface WakeContext {
  /** Whether any device is connected: time windows and token expiries otherwise matter only to live flows. */
  devicesConnected: boolean;
  /** When the flow log must be flushed (its maximum delay, or the retry of a failed flush); null when nothing waits. */
  flowLogRetryAt: number | null;
}

/**
 * The next instant after `nowMs` the clock changes something: a time-window boundary (when devices
 * or flows could care), a token expiry (any token while a device is connected: a socket's is among
 * them), a flow expiry, a retry of the flow log. Proportional to tokens and flows, not to sockets.
 */
export function nextWake(state: AccountState, flows: FlowIndex, nowMs: number, wake: WakeContext): number | null {
  let next = earliest(flows.nextExpiry(), wake.flowLogRetryAt);
  if (wake.devicesConnected || flows.flows.size > 0) next = earliest(next, nextTimeBoundary(state, nowMs));
  if (wake.devicesConnected) for (const t of state.tokens.values()) if (t.expiresAt !== null && t.expiresAt > nowMs) next = earliest(next, t.expiresAt);
  return next;
}
