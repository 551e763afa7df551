import { describe, expect, it } from 'vitest';
import { readRelayConfig } from '../../workers/account/relay-config.ts';
import { placeDevice, relayName, relayRetryDelayMs } from '../../workers/account/relay-placement.ts';

const auto = readRelayConfig({ RELAY_MAX_SOCKETS: '3' });
const always = readRelayConfig({ RELAY_PLACEMENT: 'always', RELAY_MAX_SOCKETS: '3' });

describe('relay placement (docs/architecture.md#relays)', () => {
  it('keeps a small account of one region on the writer, with no relay hop', () => {
    expect(placeDevice(auto, 'EU', { sockets: 0, home: null }, [])).toEqual({ kind: 'writer' });
    expect(placeDevice(auto, 'EU', { sockets: 2, home: 'EU' }, [])).toEqual({ kind: 'writer' });
  });

  it('sends another region, a full writer, and everything once relays exist, to the region relay with the fewest sockets under the cap', () => {
    expect(placeDevice(auto, 'AS', { sockets: 1, home: 'EU' }, [])).toEqual({ kind: 'relay', region: 'AS', n: 0 });
    expect(placeDevice(auto, 'EU', { sockets: 3, home: 'EU' }, [])).toEqual({ kind: 'relay', region: 'EU', n: 0 });
    const relays = [
      { region: 'EU', n: 0, sockets: 3 },
      { region: 'EU', n: 1, sockets: 2 },
      { region: 'EU', n: 2, sockets: 1 },
      { region: 'AS', n: 0, sockets: 0 },
    ];
    expect(placeDevice(auto, 'EU', { sockets: 0, home: 'EU' }, relays)).toEqual({ kind: 'relay', region: 'EU', n: 2 });
    expect(placeDevice(auto, 'NA', { sockets: 0, home: 'EU' }, relays)).toEqual({ kind: 'relay', region: 'NA', n: 0 });
    const full = relays.map((r) => ({ ...r, sockets: 3 }));
    expect(placeDevice(auto, 'EU', { sockets: 0, home: 'EU' }, full)).toEqual({ kind: 'relay', region: 'EU', n: 3 });
  });

  it('always: every device on a relay', () => {
    expect(placeDevice(always, 'local', { sockets: 0, home: null }, [])).toEqual({ kind: 'relay', region: 'local', n: 0 });
  });

  it("names a relay after its account, and backs off the writer's retries", () => {
    expect(relayName('a1', 'EU', 2)).toBe('a1/relay/EU/2');
    expect([1, 2, 3, 7, 20].map(relayRetryDelayMs)).toEqual([100, 200, 400, 5_000, 5_000]);
  });

  it('refuses an invalid setting, naming it', () => {
    expect(() => readRelayConfig({ RELAY_MAX_SOCKETS: '0' })).toThrow(/RELAY_MAX_SOCKETS="0"/);
    expect(() => readRelayConfig({ RELAY_PLACEMENT: 'sometimes' })).toThrow(/RELAY_PLACEMENT/);
    expect(readRelayConfig({})).toEqual({ placement: 'auto', maxSockets: 30_000, logMaxBatches: 1_000, retireAfterMs: 600_000 });
    expect(() => readRelayConfig({ RELAY_RETIRE_AFTER_MS: '-5' })).toThrow(/RELAY_RETIRE_AFTER_MS/);
  });
});
