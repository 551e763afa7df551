/**
 * The replicator's request signature (docs/protocol.md#changes-route):
 * `x-edgeplane-signature: t=<unix seconds>,v1=<hex HMAC-SHA256(secret, t + "." + raw body)>`.
 * WebCrypto, so that the same code signs in Node and verifies in workerd.
 */
export const SIGNATURE_HEADER = 'x-edgeplane-signature';
export const SIGNATURE_TOLERANCE_SECONDS = 300;

const encoder = new TextEncoder();
type HmacKey = Awaited<ReturnType<typeof crypto.subtle.importKey>>;
const keys = new Map<string, Promise<HmacKey>>();

function hmacKey(secret: string): Promise<HmacKey> {
  let key = keys.get(secret);
  if (!key) {
    key = crypto.subtle.importKey('raw', encoder.encode(secret), { name: 'HMAC', hash: 'SHA-256' }, false, ['sign', 'verify']);
    keys.set(secret, key);
  }
  return key;
}

function toHex(bytes: ArrayBuffer): string {
  return Array.from(new Uint8Array(bytes), (b) => b.toString(16).padStart(2, '0')).join('');
}

/** A hex digit's value, or -1 (by character code: every request parses a 64-digit MAC, twice). */
function hexDigit(code: number): number {
  if (code >= 48 && code <= 57) return code - 48;
  const lower = code | 0x20;
  return lower >= 97 && lower <= 102 ? lower - 87 : -1;
}

function fromHex(hex: string): Uint8Array | undefined {
  if (hex.length % 2 !== 0) return undefined;
  const out = new Uint8Array(hex.length / 2);
  for (let i = 0; i < out.length; i++) {
    const high = hexDigit(hex.charCodeAt(i * 2));
    const low = hexDigit(hex.charCodeAt(i * 2 + 1));
    if (high < 0 || low < 0) return undefined;
    out[i] = high * 16 + low;
  }
  return out;
}

export async function signBody(secret: string, body: string, unixSeconds: number): Promise<string> {
  const mac = await crypto.subtle.sign('HMAC', await hmacKey(secret), encoder.encode(`${unixSeconds}.${body}`));
  return `t=${unixSeconds},v1=${toHex(mac)}`;
}

export type SignatureCheck = 'ok' | 'missing' | 'malformed' | 'expired' | 'mismatch';

export interface SignatureHeader {
  t: number;
  mac: Uint8Array;
}

/** What the header says, checked without the body: present, well-formed, within the clock tolerance. */
export function parseSignatureHeader(header: string | null | undefined, nowSeconds: number): SignatureHeader | 'missing' | 'malformed' | 'expired' {
  if (!header) return 'missing';
  const parts = new Map<string, string>();
  for (const part of header.split(',')) {
    const i = part.indexOf('=');
    if (i > 0) parts.set(part.slice(0, i).trim(), part.slice(i + 1).trim());
  }
  const t = Number(parts.get('t'));
  const mac = fromHex(parts.get('v1') ?? '');
  if (!Number.isSafeInteger(t) || !mac || mac.length !== 32) return 'malformed';
  if (Math.abs(nowSeconds - t) > SIGNATURE_TOLERANCE_SECONDS) return 'expired';
  return { t, mac };
}

export async function verifySignature(secret: string, header: string | null | undefined, body: string, nowSeconds: number): Promise<SignatureCheck> {
  const parsed = parseSignatureHeader(header, nowSeconds);
  if (typeof parsed === 'string') return parsed;
  // crypto.subtle.verify compares in constant time.
  const ok = await crypto.subtle.verify('HMAC', await hmacKey(secret), parsed.mac, encoder.encode(`${parsed.t}.${body}`));
  return ok ? 'ok' : 'mismatch';
}
