import type { RelayConfig } from './relay-config.ts';

/**
 * The connecting device's region as the Worker saw it (`request.cf.continent`), passed to the
 * writer in this header; the Worker drops whatever a device sent under that name.
 */
export const REGION_HEADER = 'x-edgeplane-region';

/** A request without a continent (a local run, tests): one region. */
export const LOCAL_REGION = 'local';

export interface RelaySlot {
  region: string;
  n: number;
  /** The sockets it held when it last told the writer, plus those placed on it since. */
  sockets: number;
}

export type Placement = { kind: 'writer' } | { kind: 'relay'; region: string; n: number };

/**
 * Where a connecting device goes (docs/architecture.md#relays): the writer itself while the
 * account is small and in one region (`auto`), else the relay of the device's region with the
 * fewest sockets under the cap, else a new relay of that region.
 */
export function placeDevice(config: RelayConfig, region: string, writer: { sockets: number; home: string | null }, relays: readonly RelaySlot[]): Placement {
  if (config.placement === 'auto' && relays.length === 0 && (writer.home === null || writer.home === region) && writer.sockets < config.maxSockets) return { kind: 'writer' };
  let best: RelaySlot | undefined;
  let next = 0;
  for (const r of relays) {
    if (r.region !== region) continue;
    next = Math.max(next, r.n + 1);
    if (r.sockets < config.maxSockets && (!best || r.sockets < best.sockets)) best = r;
  }
  return { kind: 'relay', region, n: best ? best.n : next };
}

/** The object name of a relay: the account id first, so that a relay's name says whose it is. */
export function relayName(accountId: string, region: string, n: number): string {
  return `${accountId}/relay/${region}/${n}`;
}

/** Whether an object's name is a relay's (relayName): account ids never hold a slash. */
export function isRelayName(name: string | undefined): boolean {
  return name?.includes('/relay/') ?? false;
}

/** The region in a relay's name (relayName); LOCAL_REGION for a name that has none. */
export function regionOfRelay(name: string): string {
  return name.split('/')[2] ?? LOCAL_REGION;
}

/** The platform's `locationHint` values this file uses (a subset of DurableObjectLocationHint; plain Node has no such global). */
export type LocationHint = 'enam' | 'sam' | 'weur' | 'apac' | 'oc' | 'afr';

/** `locationHint` for a relay of a continent (request.cf.continent codes); none for an unknown one. */
export function locationHintOf(region: string): LocationHint | undefined {
  const hints: Record<string, LocationHint> = { NA: 'enam', SA: 'sam', EU: 'weur', AS: 'apac', OC: 'oc', AF: 'afr' };
  return hints[region];
}

/**
 * How long a writer waits before retrying a relay that did not acknowledge, after `failures` in a
 * row. At most 5 s: a relay back from an outage gets the batches it missed (a revocation among
 * them) within that, for one call per 5 s while it is down.
 */
export function relayRetryDelayMs(failures: number): number {
  return Math.min(5_000, 100 * 2 ** Math.max(0, failures - 1));
}
