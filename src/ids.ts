/**
 * Ids are uuids: canonical lower-case text in memory and on the wire, 16 bytes in the object's
 * SQLite caches. Brands keep an actor id from being passed where a group id is expected.
 */
declare const brand: unique symbol;
export type Id<Kind extends string> = string & { readonly [brand]: Kind };

export type AccountId = Id<'account'>;
export type ActorId = Id<'actor'>;
export type GroupId = Id<'group'>;
export type SiteId = Id<'site'>;
export type GatewayId = Id<'gateway'>;
export type ResourceId = Id<'resource'>;
export type PolicyId = Id<'policy'>;
export type ClientId = Id<'client'>;
export type TokenId = Id<'token'>;
export type FlowId = Id<'flow'>;

const UUID = /^[0-9a-f]{8}-[0-9a-f]{4}-[0-9a-f]{4}-[0-9a-f]{4}-[0-9a-f]{12}$/i;

export function isUuid(text: unknown): text is string {
  return typeof text === 'string' && UUID.test(text);
}

/** The canonical form of a uuid, or undefined when `text` is not one. */
export function asId<Kind extends string>(text: unknown): Id<Kind> | undefined {
  return isUuid(text) ? (text.toLowerCase() as Id<Kind>) : undefined;
}

const HEX: string[] = Array.from({ length: 256 }, (_, i) => i.toString(16).padStart(2, '0'));

/** Value of a hex digit by char code (lower or upper case); this runs for every id the caches write. */
const NIBBLE = new Uint8Array(128);
for (let i = 0; i < 10; i++) NIBBLE[48 + i] = i;
for (let i = 0; i < 6; i++) NIBBLE[97 + i] = NIBBLE[65 + i] = 10 + i;
/** Where each byte's two hex digits start in the canonical 8-4-4-4-12 form. */
const BYTE_AT = [0, 2, 4, 6, 9, 11, 14, 16, 19, 21, 24, 26, 28, 30, 32, 34];

export function uuidToBytes(id: string): Uint8Array {
  const out = new Uint8Array(16);
  for (let i = 0; i < 16; i++) {
    const at = BYTE_AT[i] as number;
    out[i] = ((NIBBLE[id.charCodeAt(at)] as number) << 4) | (NIBBLE[id.charCodeAt(at + 1)] as number);
  }
  return out;
}

export function bytesToUuid<Kind extends string>(bytes: ArrayBuffer | Uint8Array): Id<Kind> {
  const b = bytes instanceof Uint8Array ? bytes : new Uint8Array(bytes);
  let s = '';
  for (let i = 0; i < 16; i++) {
    if (i === 4 || i === 6 || i === 8 || i === 10) s += '-';
    s += HEX[b[i] as number];
  }
  return s as Id<Kind>;
}

/**
 * The uuid of 32 lower-case hex digits (SQLite's `lower(hex(id))`): how a woken object reads its
 * cached ids in bulk (workers/account/json-pages.ts), cheaper there than a blob per id.
 */
export function uuidFromHex<Kind extends string>(hex: string): Id<Kind> {
  return `${hex.slice(0, 8)}-${hex.slice(8, 12)}-${hex.slice(12, 16)}-${hex.slice(16, 20)}-${hex.slice(20)}` as Id<Kind>;
}

export function randomId<Kind extends string>(): Id<Kind> {
  return crypto.randomUUID() as Id<Kind>;
}
