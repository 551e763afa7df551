import { describe, expect, it } from 'vitest';
import { comparePositions, formatLsn, formatPosition, parseLsn, parsePosition } from '../../src/lsn.ts';
import { signBodyBytes } from '../../replicator/deliver/edge-client.ts';
import { signBody, verifySignature } from '../../src/signature.ts';

describe('LSN', () => {
  it('round-trips the X/Y text form and orders positions by commit LSN, then seq', () => {
    expect(parseLsn('0/16B3748')).toBe(0x16b3748n);
    expect(parseLsn('1/0')).toBe(1n << 32n);
    expect(formatLsn(parseLsn('AB/CDEF0123'))).toBe('AB/CDEF0123');
    expect(() => parseLsn('16B3748')).toThrow();
    expect(() => parseLsn('0/123456789')).toThrow();
    expect(comparePositions({ lsn: 5n, seq: 9 }, { lsn: 6n, seq: 0 })).toBeLessThan(0);
    expect(comparePositions({ lsn: 6n, seq: 1 }, { lsn: 6n, seq: 0 })).toBeGreaterThan(0);
    expect(parsePosition(formatPosition({ lsn: 0x16b3748n, seq: 3 }))).toEqual({ lsn: 0x16b3748n, seq: 3 });
  });
});

describe('request signature', () => {
  it('verifies its own signature and rejects tampering, other secrets and old timestamps', async () => {
    const now = 1_800_000_000;
    const header = await signBody('secret-one', '{"changes":[]}', now);
    expect(header).toMatch(/^t=1800000000,v1=[0-9a-f]{64}$/);
    expect(await verifySignature('secret-one', header, '{"changes":[]}', now + 10)).toBe('ok');
    expect(await verifySignature('secret-one', header, '{"changes":[1]}', now)).toBe('mismatch');
    expect(await verifySignature('secret-two', header, '{"changes":[]}', now)).toBe('mismatch');
    expect(await verifySignature('secret-one', header, '{"changes":[]}', now + 301)).toBe('expired');
    expect(await verifySignature('secret-one', undefined, '{}', now)).toBe('missing');
    expect(await verifySignature('secret-one', 't=abc,v1=zz', '{}', now)).toBe('malformed');
    // The MAC's digits: either case is the same bytes; anything else, or an odd count, is malformed.
    expect(await verifySignature('secret-one', header.toUpperCase().replace('T=', 't=').replace('V1=', 'v1='), '{"changes":[]}', now)).toBe('ok');
    const mac = header.slice(header.indexOf('v1=') + 3);
    for (const bad of [`${mac.slice(0, 63)}g`, `${mac.slice(0, 63)}:`, `${mac.slice(0, 63)}/`, `${mac.slice(0, 63)}G`, mac.slice(0, 63), `${mac.slice(0, 62)}é0`]) {
      expect(await verifySignature('secret-one', `t=${now},v1=${bad}`, '{"changes":[]}', now)).toBe('malformed');
    }
  });
});

describe("the replicator's signature over the sent bytes", () => {
  it('equals the WebCrypto signature the Worker verifies, for non-ASCII bodies too', async () => {
    const now = 1_800_000_000;
    for (const body of ['{"changes":[]}', '{"changes":[{"name":"é \\u0000 😀 \\"q\\""}]}']) {
      const header = signBodyBytes('secret-one', Buffer.from(body), now);
      expect(header).toBe(await signBody('secret-one', body, now));
      expect(await verifySignature('secret-one', header, body, now)).toBe('ok');
    }
  });
});
