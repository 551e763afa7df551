/**
 * IP addresses and CIDR blocks (v4 and v6) as bigints, for `remote_ip` conditions.
 *
 * IPv4-mapped IPv6 addresses (`::ffff:a.b.c.d`) are folded to IPv4, both as addresses and as blocks
 * (`::ffff:0:0/96` and longer prefixes), because a dual-stack socket reports v4 peers that way.
 * Otherwise the families stay apart: `::/0` means "every IPv6 address", not "everything".
 */
export interface IpAddress {
  family: 4 | 6;
  bits: bigint;
}

export interface Cidr {
  family: 4 | 6;
  /** Network address with the host bits cleared. */
  bits: bigint;
  prefix: number;
}

const V4_OCTET = /^(0|[1-9]\d{0,2})$/;
const V6_GROUP = /^[0-9A-Fa-f]{1,4}$/;

function parseV4(text: string): bigint | null {
  const parts = text.split('.');
  if (parts.length !== 4) return null;
  let bits = 0n;
  for (const part of parts) {
    // Leading zeros are refused: some parsers read them as octal, so their meaning is ambiguous.
    if (!V4_OCTET.test(part)) return null;
    const n = Number(part);
    if (n > 255) return null;
    bits = (bits << 8n) | BigInt(n);
  }
  return bits;
}

function parseGroups(text: string): bigint[] | null {
  if (text === '') return [];
  const out: bigint[] = [];
  for (const g of text.split(':')) {
    if (!V6_GROUP.test(g)) return null;
    out.push(BigInt(`0x${g}`));
  }
  return out;
}

function parseV6(text: string): bigint | null {
  // An embedded dotted quad stands for the last two groups.
  let tail: bigint[] = [];
  let head = text;
  const lastColon = text.lastIndexOf(':');
  if (text.includes('.')) {
    const v4 = parseV4(text.slice(lastColon + 1));
    if (v4 === null) return null;
    tail = [v4 >> 16n, v4 & 0xffffn];
    head = text.slice(0, lastColon + 1);
    // "::1.2.3.4" leaves "::"; "1::2:1.2.3.4" leaves "1::2:" whose trailing colon belongs to the quad.
    if (head.endsWith(':') && !head.endsWith('::')) head = head.slice(0, -1);
  }
  const halves = head.split('::');
  if (halves.length > 2) return null;
  const left = parseGroups(halves[0]!);
  const right = halves.length === 2 ? parseGroups(halves[1]!) : [];
  if (left === null || right === null) return null;
  const given = left.length + right.length + tail.length;
  if (halves.length === 2 ? given > 7 : given !== 8) return null;
  const groups = [...left, ...Array<bigint>(8 - given).fill(0n), ...right, ...tail];
  return groups.reduce((acc, g) => (acc << 16n) | g, 0n);
}

function isMapped(bits: bigint): boolean {
  return bits >> 32n === 0xffffn;
}

export function parseIp(text: string): IpAddress | null {
  if (text.includes(':')) {
    const bits = parseV6(text);
    if (bits === null) return null;
    return isMapped(bits) ? { family: 4, bits: bits & 0xffffffffn } : { family: 6, bits };
  }
  const bits = parseV4(text);
  return bits === null ? null : { family: 4, bits };
}

/**
 * `a.b.c.d/n`, `v6/n`, or a bare address (a block of one). Host bits set below the prefix are
 * cleared rather than refused, as Postgres `inet` and most tools allow.
 */
export function parseCidr(text: string): Cidr | null {
  const slash = text.indexOf('/');
  const addrText = slash < 0 ? text : text.slice(0, slash);
  const v6 = addrText.includes(':');
  const bits = v6 ? parseV6(addrText) : parseV4(addrText);
  if (bits === null) return null;
  const width = v6 ? 128 : 32;
  let prefix = width;
  if (slash >= 0) {
    const p = text.slice(slash + 1);
    if (!/^(0|[1-9]\d{0,2})$/.test(p)) return null;
    prefix = Number(p);
    if (prefix > width) return null;
  }
  if (v6 && prefix >= 96 && isMapped(bits)) return block(4, bits & 0xffffffffn, prefix - 96);
  return block(v6 ? 6 : 4, bits, prefix);
}

function block(family: 4 | 6, bits: bigint, prefix: number): Cidr {
  const width = family === 4 ? 32 : 128;
  const host = (1n << BigInt(width - prefix)) - 1n;
  return { family, bits: bits & ~host, prefix };
}

export function cidrContains(cidr: Cidr, ip: IpAddress): boolean {
  if (cidr.family !== ip.family) return false;
  const width = cidr.family === 4 ? 32 : 128;
  const host = (1n << BigInt(width - cidr.prefix)) - 1n;
  return (ip.bits & ~host) === cidr.bits;
}
