import { describe, expect, it } from 'vitest';
import { seededRandom } from '../support/seeded-random.ts';
import { connect } from './support/device.ts';
import { authorized, createFlow, flowWorld } from './support/flows.ts';

const KiB = 1024;
const uuid = () => crypto.randomUUID();

/** Every reason an `error` frame may give for a frame that is not a valid request (docs/protocol.md#frames). */
const REASONS = [
  /^frame too large: at most 65536 bytes$/,
  /^frame nested too deeply: at most 16 levels$/,
  /^binary frames are not supported; send JSON text$/,
  /^malformed JSON$/,
  /^expected \{"event": string, "payload": object, "ref"\?: string\|number\}$/,
  /^unknown event: .{0,64}$/s,
  /^invalid create_flow payload: .+/s,
];

/** Frames no device should send, each answered by exactly one `error` frame. */
function fuzzFrames(seed: number): (string | ArrayBuffer)[] {
  const random = seededRandom(seed);
  const pick = <T>(xs: readonly T[]): T => xs[Math.floor(random() * xs.length)]!;
  const bytes = (n: number) => Uint8Array.from({ length: n }, () => Math.floor(random() * 256)).buffer;
  const flow = (payload: unknown, extra: Record<string, unknown> = {}) => JSON.stringify({ event: 'create_flow', payload, ...extra });
  const frames: (string | ArrayBuffer)[] = [];
  // Sizes up to 2 MiB, by bytes: ASCII, and three-byte characters that pass a count of code units.
  for (const n of [64 * KiB + 1, 100 * KiB, 1024 * KiB, 2048 * KiB]) frames.push(flow({ resource_id: uuid(), pad: 'x'.repeat(n) }));
  frames.push(flow({ resource_id: uuid(), pad: '€'.repeat(22 * KiB) }));
  frames.push('x'.repeat(2048 * KiB));
  // Binary frames: random bytes, invalid UTF-8, and over the size limit. (Text frames always carry
  // valid UTF-8 here: the WebSocket API encodes strings, turning lone surrogates into U+FFFD.)
  frames.push(
    bytes(16),
    new Uint8Array([0xff, 0xfe, 0xc3, 0x28, 0xa0, 0xa1]).buffer,
    new TextEncoder().encode(flow({ resource_id: uuid() })).buffer as ArrayBuffer,
    bytes(2048 * KiB),
  );
  frames.push(flow({ resource_id: '\uD800\uDBFF' }), `{"event":"create_flow\uDC00","payload":{}}`, '\u0000\u0001\u0002', '\uFEFF{"event":"x"}');
  // Deep nesting, balanced or not, in every field, up to what fits in 64 KiB.
  for (const depth of [17, 100, 10_000, 30_000]) {
    frames.push(`{"event":"create_flow","payload":${'['.repeat(depth)}${']'.repeat(depth)}}`);
    frames.push(`{"event":"create_flow","payload":{"resource_id":${'{"a":'.repeat(depth)}1${'}'.repeat(depth)}}}`);
    frames.push('['.repeat(depth));
  }
  frames.push(`{"event":"create_flow","ref":${'['.repeat(20)}${']'.repeat(20)},"payload":{}}`);
  // Wrong types for every field.
  for (const event of [1, null, true, {}, [], 'e'.repeat(65), 'create_flow '.repeat(100)]) frames.push(JSON.stringify({ event, payload: {} }));
  for (const ref of [{}, [], true, null, 'r'.repeat(257)]) frames.push(JSON.stringify({ event: 'create_flow', ref, payload: { resource_id: uuid() } }));
  frames.push('{"event":"create_flow","ref":1e400,"payload":{}}', '{"event":"create_flow","ref":-1e999,"payload":{}}');
  for (const payload of [
    'x',
    1,
    [],
    null,
    true,
    { resource_id: 1 },
    { resource_id: null },
    { resource_id: [uuid()] },
    { resource_id: `${uuid()}0` },
    { resource_id: 'x'.repeat(60 * KiB) },
  ]) {
    frames.push(flow(payload, { ref: 'wrong-type' }));
  }
  for (const ids of ['x', {}, [1], [null], [[uuid()]], [`${uuid()} `], Array(1001).fill(uuid())]) frames.push(flow({ resource_id: uuid(), connected_gateway_ids: ids }));
  // Huge arrays: over the limit of 1,000 ids, and many small values within 64 KiB.
  frames.push(flow({ resource_id: uuid(), connected_gateway_ids: Array(5000).fill(uuid()) }));
  frames.push(flow(Array(30_000).fill(0)), JSON.stringify(Array(30_000).fill(0)), flow({ resource_id: uuid(), connected_gateway_ids: Array(30_000).fill(0) }));
  // The gateway-only and unknown events, and random JSON and text.
  frames.push(
    JSON.stringify({ event: 'authorize_flow', payload: {} }),
    JSON.stringify({ event: 'reply', ref: 1, payload: { status: 'ok' } }),
    JSON.stringify({ event: '', payload: {} }),
  );
  const value = (depth: number): unknown => {
    const r = random();
    if (depth > 6 || r < 0.3) return pick([0, -1, 1.5, 1e308, '', 'create_flow', uuid(), true, false, null]);
    if (r < 0.6) return Array.from({ length: Math.floor(random() * 4) }, () => value(depth + 1));
    return Object.fromEntries(
      Array.from({ length: Math.floor(random() * 4) }, () => [pick(['event', 'payload', 'ref', 'resource_id', 'connected_gateway_ids', 'x']), value(depth + 1)]),
    );
  };
  for (let i = 0; i < 150; i++) frames.push(JSON.stringify(value(0)));
  const alphabet = ['{', '}', '[', ']', '"', '\\', ':', ',', '1', 'e', 'null', '"event"', '"create_flow"', '"payload"', '\uD800', '€', ' '];
  for (let i = 0; i < 100; i++) frames.push(Array.from({ length: 1 + Math.floor(random() * 40) }, () => pick(alphabet)).join(''));
  return frames;
}

describe('frames a device sends (docs/architecture.md#11-bounded)', () => {
  it('frame fuzz: every bad frame gets one error and changes nothing, no exception escapes, and the account goes on', async () => {
    const seed = 20261201;
    const w = await flowWorld();
    const observer = await connect('client', w.s.token);
    // A live flow of another client, so that the gateway has something to be told about.
    await authorized({ client: observer.device, gateway: w.gateway }, w.s.resource.id);
    await observer.device.drain();
    const frames = fuzzFrames(seed);
    await w.client.drain();
    const before = w.client.frames.length;
    for (const f of frames) w.client.ws.send(f);
    await w.client.waitFor(() => w.client.closed !== undefined || w.client.frames.length - before >= frames.length, `${frames.length} errors`, 60_000);
    expect(w.client.closed, `seed ${seed}`).toBeUndefined();
    const answers = await w.client.drain();
    expect(answers, `seed ${seed}`).toHaveLength(frames.length);
    for (const [i, a] of answers.entries()) {
      expect(a.event, `seed ${seed} frame ${i}: ${String(frames[i]).slice(0, 80)}`).toBe('error');
      const reason = String(a.payload.reason);
      // 'internal error' would be an exception caught on its way out.
      expect(
        REASONS.some((r) => r.test(reason)),
        `seed ${seed} frame ${i}: ${reason.slice(0, 200)}`,
      ).toBe(true);
    }
    expect(answers.map((a) => a.payload.reason)).toContain('frame too large: at most 65536 bytes');
    expect(answers.map((a) => a.payload.reason)).toContain('frame nested too deeply: at most 16 levels');
    expect(await w.gateway.drain()).toEqual([]);
    // A real change batch after the fuzz: every socket of the account gets its part of it.
    await w.account.apply((t) => t.update('resources', { id: w.s.resource.id }, { name: 'Wiki (renamed)', filters: t.tx.json([{ protocol: 'tcp', ports: ['8443'] }]) }));
    for (const d of [w.client, observer.device]) {
      expect(await d.next('resource_created_or_updated')).toMatchObject({ payload: { id: w.s.resource.id, name: 'Wiki (renamed)' } });
    }
    expect(await w.gateway.next('resource_updated')).toMatchObject({ payload: { id: w.s.resource.id, name: 'Wiki (renamed)' } });
    // And the fuzzing client itself still gets its flows.
    expect((await createFlow(w.client, w.s.resource.id)).event).toBe('flow_created');
  });
});
