import { describe, expect, it } from 'vitest';
import { FRAME_LIMITS, nestsDeeperThan, readDeviceFrame, utf8Length } from '../../src/device-frames.ts';
import { clientFrameSchema } from '../../src/messages.ts';
import { seededRandom } from '../support/seeded-random.ts';

const uuid = '00000000-0000-4000-8000-000000000001';

describe('device frames (docs/protocol.md#frames)', () => {
  it('counts UTF-8 bytes as the wire does, lone surrogates as U+FFFD', () => {
    for (const s of ['', 'abc', 'é', '€', '😀', 'a\u{10FFFF}b', 'x'.repeat(1000)]) expect(utf8Length(s, 1e9)).toBe(new TextEncoder().encode(s).byteLength);
    expect(utf8Length('\uD800', 1e9)).toBe(3);
    expect(utf8Length('\uDC00a', 1e9)).toBe(4);
    expect(utf8Length('x'.repeat(100), 10)).toBeGreaterThan(10);
  });

  it('refuses frames over 64 KiB before parsing, by bytes, text or binary', () => {
    const body = (n: number) => JSON.stringify({ event: 'create_flow', payload: { pad: 'x'.repeat(n) } });
    const overhead = body(0).length;
    expect(readDeviceFrame(body(FRAME_LIMITS.maxBytes - overhead)).ok).toBe(true);
    expect(readDeviceFrame(body(FRAME_LIMITS.maxBytes - overhead + 1))).toEqual({ ok: false, reason: 'frame too large: at most 65536 bytes' });
    // 30,000 three-byte characters: fewer code units than the limit, more bytes.
    expect(readDeviceFrame(JSON.stringify({ event: 'x', payload: '€'.repeat(30_000) }))).toMatchObject({ ok: false, reason: /too large/ });
    expect(readDeviceFrame('x'.repeat(2 * 1024 * 1024))).toMatchObject({ ok: false, reason: /too large/ });
    expect(readDeviceFrame(new ArrayBuffer(FRAME_LIMITS.maxBytes + 1))).toMatchObject({ ok: false, reason: /too large/ });
    expect(readDeviceFrame(new Uint8Array([0xff, 0xfe, 0x7b]).buffer)).toEqual({ ok: false, reason: 'binary frames are not supported; send JSON text' });
  });

  it('refuses nesting deeper than 16 levels before parsing, and reads strings with brackets and escapes right', () => {
    const nested = (n: number) => `${'['.repeat(n)}${']'.repeat(n)}`;
    expect(nestsDeeperThan(nested(16), 16)).toBe(false);
    expect(nestsDeeperThan(nested(17), 16)).toBe(true);
    expect(nestsDeeperThan(JSON.stringify({ a: '[[[[[[[[[[[[[[[[[[[[[[[[', b: 'a\\"[[[[[[[[[[[[[[[[[[[[[[[' }), 2)).toBe(false);
    expect(readDeviceFrame(`{"event":"create_flow","payload":${nested(20_000)}}`)).toEqual({ ok: false, reason: 'frame nested too deeply: at most 16 levels' });
    expect(readDeviceFrame(`{"event":"create_flow","payload":${nested(15)}}`)).toMatchObject({ ok: true });
  });

  it('bounds every string and array of the envelope and of create_flow', () => {
    const envelope = (over: Record<string, unknown>) => readDeviceFrame(JSON.stringify({ event: 'create_flow', payload: {}, ...over }));
    expect(envelope({ event: 'e'.repeat(64) })).toMatchObject({ ok: true });
    expect(envelope({ event: 'e'.repeat(65) })).toMatchObject({ ok: false });
    expect(envelope({ ref: 'r'.repeat(256) })).toMatchObject({ ok: true });
    expect(envelope({ ref: 'r'.repeat(257) })).toMatchObject({ ok: false });
    expect(readDeviceFrame('{"event":"create_flow","ref":1e400}')).toMatchObject({ ok: false });
    for (const bad of [null, 1, 'x', [], { event: 1 }, { event: null }, { ref: {} }]) expect(readDeviceFrame(JSON.stringify(bad)).ok).toBe(false);
    const flow = (payload: unknown) => clientFrameSchema.safeParse({ event: 'create_flow', payload }).success;
    expect(flow({ resource_id: uuid, connected_gateway_ids: Array(1000).fill(uuid) })).toBe(true);
    expect(flow({ resource_id: uuid, connected_gateway_ids: Array(1001).fill(uuid) })).toBe(false);
    expect(flow({ resource_id: `${uuid}0` })).toBe(false);
    expect(flow({ resource_id: uuid, connected_gateway_ids: [uuid, 5] })).toBe(false);
  });

  it('never throws, whatever the text', () => {
    const seed = 4242;
    const random = seededRandom(seed);
    const alphabet = ['{', '}', '[', ']', '"', '\\', ':', ',', '1', 'e', '-', 'true', 'null', ' ', '\uD800', '€', '"event"', '"create_flow"', '"payload"', '"ref"'];
    for (let i = 0; i < 5_000; i++) {
      const n = Math.floor(random() * 60);
      let text = '';
      for (let j = 0; j < n; j++) text += alphabet[Math.floor(random() * alphabet.length)];
      expect(() => readDeviceFrame(text), `seed ${seed} frame ${i}: ${text}`).not.toThrow();
    }
  });
});
