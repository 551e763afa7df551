import { z } from 'zod';
import { countSetting as count, readSettings } from '../../src/settings.ts';

/**
 * Where the writer puts a connecting device (docs/architecture.md#relays), read from the Worker's
 * variables, all prefixed `RELAY_`. Unset or empty: the default.
 */
export const relayConfigSchema = z.object({
  RELAY_PLACEMENT: z
    .preprocess((v) => (v === '' ? undefined : v), z.enum(['auto', 'always']).default('auto'))
    .describe("auto: the writer holds an account's sockets while it is small and in one region; always: every device on a relay (a test and ops setting)"),
  RELAY_MAX_SOCKETS: count('sockets a relay (or the writer itself) holds before the next device goes to another relay', 30_000),
  RELAY_LOG_MAX_BATCHES: count('applied batches the writer keeps for relays that fell behind; a relay behind the oldest re-hydrates', 1_000),
  RELAY_RETIRE_AFTER_MS: count('how long a relay holds no socket and no flow before it retires (the writer stops forwarding to it and it drops its storage)', 600_000),
});

export interface RelayConfig {
  placement: 'auto' | 'always';
  maxSockets: number;
  logMaxBatches: number;
  retireAfterMs: number;
}

export class RelayConfigError extends Error {
  override name = 'RelayConfigError';
}

/** The relay settings from the Worker's environment; an invalid value throws, naming the variable and what it means. */
export function readRelayConfig(env: Record<string, unknown>): RelayConfig {
  const read = readSettings(relayConfigSchema, env);
  if (!read.ok) throw new RelayConfigError(`invalid relay settings: ${read.problems}`);
  const v = read.value;
  return { placement: v.RELAY_PLACEMENT, maxSockets: v.RELAY_MAX_SOCKETS, logMaxBatches: v.RELAY_LOG_MAX_BATCHES, retireAfterMs: v.RELAY_RETIRE_AFTER_MS };
}
