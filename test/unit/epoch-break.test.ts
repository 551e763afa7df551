import { describe, expect, it } from 'vitest';
import { epochBreak, type StreamOrigin } from '../../replicator/stream/epoch.ts';

const origin: StreamOrigin = { slot: 'edgeplane', systemIdentifier: '7400000000000000001', timeline: 1, slotCreated: false, startLsn: 0x1000n };
const stored = { system_identifier: '7400000000000000001', timeline: 1 };

describe('epochBreak (docs/architecture.md#12-epochs)', () => {
  it('continues the stream of the same slot of the same cluster, on any timeline (a failover that kept the slot)', () => {
    expect(epochBreak(stored, origin)).toBeUndefined();
    expect(epochBreak(stored, { ...origin, timeline: 2 })).toBeUndefined();
    // A slot that streamed before epochs were recorded goes on too.
    expect(epochBreak(undefined, origin)).toBeUndefined();
  });

  it('breaks for a slot created now, and for another cluster even when its slot has the same name', () => {
    expect(epochBreak(undefined, { ...origin, slotCreated: true })).toBe('the first stream of this slot');
    expect(epochBreak(stored, { ...origin, slotCreated: true })).toBe('the replication slot was created anew');
    expect(epochBreak(stored, { ...origin, systemIdentifier: '7400000000000000002' })).toBe('another cluster (system identifier 7400000000000000001 -> 7400000000000000002)');
  });
});
