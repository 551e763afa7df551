import { describe, expect, it } from 'vitest';
import {
  afterHealthCheck,
  afterStop,
  FRESH_RECORD,
  RESTART_BASE_MS,
  RESTART_MAX_MS,
  restartDelayMs,
  STABLE_RUN_MS,
  STOP_GRACE_MS,
  UNHEALTHY_RESTART_MS,
} from '../../workers/replicator/restart-policy.ts';

// docs/protocol.md#replicator-container: when the Worker restarts its replicator.
describe('replicator restart policy', () => {
  it('backs off exponentially after stops that follow short runs, capped', () => {
    expect(restartDelayMs(0)).toBe(RESTART_BASE_MS);
    expect(restartDelayMs(1)).toBe(2 * RESTART_BASE_MS);
    expect(restartDelayMs(3)).toBe(8 * RESTART_BASE_MS);
    expect(restartDelayMs(40)).toBe(RESTART_MAX_MS);
  });

  it('counts a stop after a short run as a failure, and a long run resets the count', () => {
    const t0 = 1_000_000;
    const short = afterStop({ failures: 2, startedAt: t0 }, t0 + 5_000);
    expect(short.failures).toBe(3);
    expect(short.notBefore).toBe(t0 + 5_000 + restartDelayMs(3));
    const long = afterStop({ failures: 7, startedAt: t0 }, t0 + STABLE_RUN_MS);
    expect(long).toEqual({ failures: 0, notBefore: t0 + STABLE_RUN_MS + RESTART_BASE_MS });
    // A crash before the start was recorded counts too.
    expect(afterStop(FRESH_RECORD, t0).failures).toBe(1);
  });

  it('restarts only after /healthz failed for UNHEALTHY_RESTART_MS in a row', () => {
    const t0 = 5_000_000;
    let { record, action } = afterHealthCheck(FRESH_RECORD, false, t0);
    expect(action).toBe('none');
    expect(record.unhealthySince).toBe(t0);
    ({ record, action } = afterHealthCheck(record, false, t0 + UNHEALTHY_RESTART_MS - 1));
    expect(action).toBe('none');
    // One healthy answer starts the count again.
    const healed = afterHealthCheck(record, true, t0 + UNHEALTHY_RESTART_MS - 1);
    expect(healed.action).toBe('none');
    expect(healed.record.unhealthySince).toBeUndefined();
    ({ record, action } = afterHealthCheck(record, false, t0 + UNHEALTHY_RESTART_MS));
    expect(action).toBe('stop');
    expect(record.stopRequestedAt).toBe(t0 + UNHEALTHY_RESTART_MS);
  });

  it('destroys a container that has not exited STOP_GRACE_MS after its SIGTERM', () => {
    const t0 = 9_000_000;
    const stopping = { failures: 0, unhealthySince: t0 - UNHEALTHY_RESTART_MS, stopRequestedAt: t0 };
    expect(afterHealthCheck(stopping, true, t0 + STOP_GRACE_MS - 1).action).toBe('none');
    expect(afterHealthCheck(stopping, false, t0 + STOP_GRACE_MS).action).toBe('destroy');
  });
});
