import { describe, expect, it } from 'vitest';
import { cidrContains, parseCidr, parseIp } from '../../src/cidr.ts';

const ip = (text: string) => {
  const parsed = parseIp(text);
  if (!parsed) throw new Error(`test address does not parse: ${text}`);
  return parsed;
};
const contains = (cidr: string, address: string) => {
  const block = parseCidr(cidr);
  if (!block) throw new Error(`test block does not parse: ${cidr}`);
  return cidrContains(block, ip(address));
};

describe('parseIp', () => {
  it('reads IPv4 and every IPv6 spelling', () => {
    expect(parseIp('192.168.0.1')).toEqual({ family: 4, bits: 0xc0a80001n });
    expect(parseIp('0.0.0.0')).toEqual({ family: 4, bits: 0n });
    expect(parseIp('2001:db8:0:0:0:0:0:1')).toEqual({ family: 6, bits: 0x20010db8000000000000000000000001n });
    expect(parseIp('2001:DB8::1')).toEqual({ family: 6, bits: 0x20010db8000000000000000000000001n });
    expect(parseIp('::')).toEqual({ family: 6, bits: 0n });
    expect(parseIp('::1')).toEqual({ family: 6, bits: 1n });
    expect(parseIp('fe80::')).toEqual({ family: 6, bits: 0xfe80n << 112n });
    expect(parseIp('64:ff9b::1.2.3.4')).toEqual({ family: 6, bits: (0x64ff9bn << 96n) | 0x01020304n });
  });

  it('folds IPv4-mapped IPv6 to IPv4, dotted or hex', () => {
    expect(parseIp('::ffff:1.2.3.4')).toEqual({ family: 4, bits: 0x01020304n });
    expect(parseIp('::ffff:102:304')).toEqual({ family: 4, bits: 0x01020304n });
    expect(parseIp('0:0:0:0:0:ffff:1.2.3.4')).toEqual({ family: 4, bits: 0x01020304n });
  });

  it('refuses malformed addresses', () => {
    for (const bad of [
      '',
      'abc',
      '1.2.3',
      '1.2.3.4.5',
      '1.2.3.256',
      '01.2.3.4',
      '1.2.3.-1',
      '1:2:3:4:5:6:7:8:9',
      '1:2:3:4:5:6:7',
      '1::2::3',
      '1:::2',
      ':1::',
      '12345::',
      'fe80::1%eth0',
      '::ffff:1.2.3',
      '1.2.3.4:80',
      ' 1.2.3.4',
    ]) {
      expect(parseIp(bad), bad).toBeNull();
    }
  });
});

describe('parseCidr', () => {
  it('reads v4 and v6 blocks and bare addresses as single-address blocks', () => {
    expect(parseCidr('10.0.0.0/8')).toEqual({ family: 4, bits: 0x0a000000n, prefix: 8 });
    expect(parseCidr('1.2.3.4')).toEqual({ family: 4, bits: 0x01020304n, prefix: 32 });
    expect(parseCidr('0.0.0.0/0')).toEqual({ family: 4, bits: 0n, prefix: 0 });
    expect(parseCidr('2001:db8::/32')).toEqual({ family: 6, bits: 0x20010db8n << 96n, prefix: 32 });
    expect(parseCidr('::1')).toEqual({ family: 6, bits: 1n, prefix: 128 });
  });

  it('clears host bits below the prefix', () => {
    expect(parseCidr('10.1.2.3/8')).toEqual({ family: 4, bits: 0x0a000000n, prefix: 8 });
    expect(parseCidr('2001:db8::1/64')).toEqual({ family: 6, bits: 0x20010db8n << 96n, prefix: 64 });
  });

  it('folds mapped blocks of /96 and longer to IPv4', () => {
    expect(parseCidr('::ffff:10.0.0.0/104')).toEqual({ family: 4, bits: 0x0a000000n, prefix: 8 });
    expect(parseCidr('::ffff:0:0/96')).toEqual({ family: 4, bits: 0n, prefix: 0 });
  });

  it('refuses malformed blocks', () => {
    const bad = ['', '/8', '1.2.3.4/', '1.2.3.4/33', '1.2.3.4/08', '1.2.3.4/-1', '1.2.3.4/8/8'];
    bad.push('::/129', '10.0.0/8', 'x/8');
    for (const text of bad) {
      expect(parseCidr(text), text).toBeNull();
    }
  });
});

describe('cidrContains', () => {
  it('matches v4 addresses inside the block only', () => {
    expect(contains('10.0.0.0/8', '10.255.255.255')).toBe(true);
    expect(contains('10.0.0.0/8', '11.0.0.0')).toBe(false);
    expect(contains('192.168.1.0/24', '192.168.1.77')).toBe(true);
    expect(contains('192.168.1.0/24', '192.168.2.77')).toBe(false);
    expect(contains('1.2.3.4', '1.2.3.4')).toBe(true);
    expect(contains('1.2.3.4', '1.2.3.5')).toBe(false);
    expect(contains('0.0.0.0/0', '255.255.255.255')).toBe(true);
  });

  it('matches v6 addresses inside the block only', () => {
    expect(contains('2001:db8::/32', '2001:db8:ffff::1')).toBe(true);
    expect(contains('2001:db8::/32', '2001:db9::')).toBe(false);
    expect(contains('::1', '::1')).toBe(true);
    expect(contains('::/0', 'ffff:ffff:ffff:ffff:ffff:ffff:ffff:ffff')).toBe(true);
  });

  it('matches mapped addresses against v4 blocks, and keeps the families apart otherwise', () => {
    expect(contains('1.2.3.0/24', '::ffff:1.2.3.4')).toBe(true);
    expect(contains('1.2.3.0/24', '::ffff:1.2.4.4')).toBe(false);
    expect(contains('::ffff:1.2.3.0/120', '1.2.3.9')).toBe(true);
    expect(contains('::/0', '1.2.3.4')).toBe(false);
    expect(contains('0.0.0.0/0', '2001:db8::1')).toBe(false);
    // A v6 address whose low 32 bits look like the v4 block is still v6.
    expect(contains('1.2.3.0/24', '::1.2.3.4')).toBe(false);
  });
});
