import type { AccountState } from './access/account-state.ts';
import { nextTimeBoundary, timeBoundaryOf } from './access/access.ts';
import { Dirty } from './access/dirty.ts';
import { earliest } from './flows/authorize.ts';
import type { FlowIndex } from './flows/flow-index.ts';
import type { PolicyId } from './ids.ts';
import type { TokenRecord } from './records.ts';

/**
 * What the clock may have changed by `nowMs`, for an alarm to push (docs/architecture.md#the-alarm:
 * token expiry and time windows are re-checked at the next boundary): every (actor, resource)
 * pair of a timed policy whose window opened or closed (or that changed since the last alarm),
 * every expired token, and the pair of every expired flow (its client, when the client is gone).
 * Alarms run at least once, so marking what turns out unchanged is fine. Policies, tokens and
 * flows are read from their heaps: the cost follows what expired, not what the account holds.
 */
export function dueAt(state: AccountState, flows: FlowIndex, nowMs: number): Dirty {
  const dirty = new Dirty();
  for (const policyId of settleTimedPolicies(state, nowMs)) {
    const p = state.policies.get(policyId);
    if (!p) continue;
    for (const actorId of state.actorsOfGroup.get(p.groupId)) dirty.pair(actorId, p.resourceId);
  }
  for (const tokenId of state.tokenExpiries.due(nowMs)) dirty.tokens.add(tokenId);
  for (const f of flows.expiredBy(nowMs)) {
    const client = state.clients.get(f.clientId);
    if (client) dirty.pair(client.actorId, f.resourceId);
    else dirty.clients.add(f.clientId);
  }
  return dirty;
}

/**
 * The timed policies whose outcome may have changed by `nowMs`: a boundary of theirs passed, or
 * they were stored since the last alarm (a batch pushed them then, but their boundary since is
 * unknown). Each is settled again at its next boundary after `nowMs`: until then its outcome stays
 * what `nowMs` gives.
 */
export function settleTimedPolicies(state: AccountState, nowMs: number): PolicyId[] {
  const due = [...state.timeBoundaries.due(nowMs), ...state.unsettledTimed];
  state.unsettledTimed.clear();
  for (const policyId of due) {
    const at = timeBoundaryOf(state, policyId, nowMs);
    if (at === null) state.timeBoundaries.delete(policyId);
    else state.timeBoundaries.set(policyId, at);
  }
  return due;
}

/**
 * The tokens expired by `nowMs`: once an alarm has closed their sockets and revoked their flows,
 * they leave the caches (docs/architecture.md#11-bounded); a later change of the row brings it
 * back through the normal change path.
 */
export function expiredTokens(state: AccountState, nowMs: number): TokenRecord[] {
  return state.tokenExpiries.due(nowMs).map((id) => state.tokens.get(id)!);
}

export interface WakeContext {
  /** Whether any device is connected: time windows and token expiries otherwise matter only to live flows. */
  devicesConnected: boolean;
  /** When the flow log must be flushed (its maximum delay, or the retry of a failed flush); null when nothing waits. */
  flowLogRetryAt: number | null;
  /** When the flow log's retention next runs; null when nothing is scheduled. */
  flowRetentionAt?: number | null;
}

/**
 * The next instant the clock changes something: a time-window boundary (when devices or flows
 * could care), a token expiry (any token while a device is connected: a socket's is among them;
 * a token already expired makes the wake immediate, so that it leaves the cache), a flow expiry,
 * a retry of the flow log, its retention. O(1) for tokens and flows (their expiry heaps).
 */
export function nextWake(state: AccountState, flows: FlowIndex, nowMs: number, wake: WakeContext): number | null {
  let next = earliest(flows.nextExpiry(), wake.flowLogRetryAt, wake.flowRetentionAt ?? null);
  if (wake.devicesConnected || flows.flows.size > 0) next = earliest(next, nextTimeBoundary(state, nowMs));
  if (wake.devicesConnected) next = earliest(next, state.earliestTokenExpiry());
  return next;
}
