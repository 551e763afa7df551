import { describe, expect, it } from 'vitest';
import { type AdaptableResource, type Version, adaptResource, compareVersions, gatewayCompatible, parseVersion } from '../../src/versions.ts';

const v = (text: string): Version => {
  const parsed = parseVersion(text);
  if (!parsed) throw new Error(`test version does not parse: ${text}`);
  return parsed;
};
const dns = (address: string): AdaptableResource => ({ type: 'dns', address });
const internet: AdaptableResource = { type: 'internet', address: null };

describe('parseVersion', () => {
  it('reads MAJOR.MINOR.PATCH and ignores prerelease and build', () => {
    expect(parseVersion('1.2.3')).toEqual({ major: 1, minor: 2, patch: 3 });
    expect(parseVersion('0.0.0')).toEqual({ major: 0, minor: 0, patch: 0 });
    expect(parseVersion('10.20.300')).toEqual({ major: 10, minor: 20, patch: 300 });
    expect(parseVersion('1.3.0-beta.1')).toEqual({ major: 1, minor: 3, patch: 0 });
    expect(parseVersion('1.3.0+build.7')).toEqual({ major: 1, minor: 3, patch: 0 });
    expect(parseVersion('1.3.0-rc-1+sha.abc')).toEqual({ major: 1, minor: 3, patch: 0 });
  });

  it('refuses garbage, empty and missing', () => {
    const bad = [null, undefined, '', 'garbage', '1', '1.2', '1.2.3.4', 'v1.2.3', ' 1.2.3', '1.2.3 ', '01.2.3'];
    bad.push('1.02.3', '1.2.03', '1.2.3-', '1.2.3+', '1.2.3-beta..1', '-1.2.3', '1.2.x', '99999999999999999999.0.0');
    for (const text of bad) {
      expect(parseVersion(text), String(text)).toBeNull();
    }
  });

  it('compares major, then minor, then patch', () => {
    expect(compareVersions(v('1.2.3'), v('1.2.3'))).toBe(0);
    expect(compareVersions(v('1.2.3'), v('1.2.4'))).toBe(-1);
    expect(compareVersions(v('1.3.0'), v('1.2.9'))).toBe(1);
    expect(compareVersions(v('2.0.0'), v('1.99.99'))).toBe(1);
    expect(compareVersions(v('1.3.0-beta'), v('1.3.0'))).toBe(0);
  });
});

describe('adaptResource', () => {
  it('hides internet resources below 1.3.0', () => {
    expect(adaptResource(internet, v('1.2.9'))).toBeNull();
    expect(adaptResource(internet, v('0.9.0'))).toBeNull();
    expect(adaptResource(internet, v('1.3.0'))).toEqual({ address: null });
    expect(adaptResource(internet, v('2.0.0'))).toEqual({ address: null });
  });

  it('rewrites a leading wildcard below 1.2.0 and leaves it from 1.2.0', () => {
    expect(adaptResource(dns('**.example.com'), v('1.1.9'))).toEqual({ address: '*.example.com' });
    expect(adaptResource(dns('*.example.com'), v('1.1.9'))).toEqual({ address: '?.example.com' });
    expect(adaptResource(dns('**.example.com'), v('1.2.0'))).toEqual({ address: '**.example.com' });
    expect(adaptResource(dns('*.example.com'), v('1.2.0'))).toEqual({ address: '*.example.com' });
  });

  it('hides addresses an old client cannot express', () => {
    const inexpressible = ['a.*.example.com', 'example.*', '?.example.com', 'a?.example.com', '*.*.example.com'];
    inexpressible.push('**.*.example.com', '***.example.com', '*.example?.com');
    for (const address of inexpressible) {
      expect(adaptResource(dns(address), v('1.1.9')), address).toBeNull();
      expect(adaptResource(dns(address), v('1.2.0')), address).toEqual({ address });
    }
  });

  it('passes addresses without wildcards and non-dns resources unchanged', () => {
    expect(adaptResource(dns('example.com'), v('0.1.0'))).toEqual({ address: 'example.com' });
    expect(adaptResource({ type: 'ip', address: '10.0.0.1' }, v('0.1.0'))).toEqual({ address: '10.0.0.1' });
    expect(adaptResource({ type: 'cidr', address: '10.0.0.0/8' }, v('0.1.0'))).toEqual({ address: '10.0.0.0/8' });
  });
});

describe('gatewayCompatible', () => {
  const plain = dns('example.com');

  it('admits gateways from client major.(minor-1).0 up to, not including, major.(minor+2).0', () => {
    const client = v('1.5.3');
    expect(gatewayCompatible(v('1.3.99'), client, plain)).toBe(false);
    expect(gatewayCompatible(v('1.4.0'), client, plain)).toBe(true);
    expect(gatewayCompatible(v('1.5.0'), client, plain)).toBe(true);
    expect(gatewayCompatible(v('1.6.99'), client, plain)).toBe(true);
    expect(gatewayCompatible(v('1.7.0'), client, plain)).toBe(false);
    expect(gatewayCompatible(v('2.5.3'), client, plain)).toBe(false);
    expect(gatewayCompatible(v('0.5.3'), client, plain)).toBe(false);
  });

  it('at minor 0 admits any lower minor of the same major only', () => {
    const client = v('2.0.5');
    expect(gatewayCompatible(v('1.99.99'), client, plain)).toBe(false);
    expect(gatewayCompatible(v('2.0.0'), client, plain)).toBe(true);
    expect(gatewayCompatible(v('2.1.7'), client, plain)).toBe(true);
    expect(gatewayCompatible(v('2.2.0'), client, plain)).toBe(false);
  });

  it('requires the gateway itself to handle the resource', () => {
    // Client 1.3.x: gateways 1.2.0 up to 1.5.0 by version.
    const client = v('1.3.0');
    expect(gatewayCompatible(v('1.2.9'), client, internet)).toBe(false);
    expect(gatewayCompatible(v('1.3.0'), client, internet)).toBe(true);
    // Client 1.2.x: gateways 1.1.0 up to 1.4.0; a 1.1 gateway cannot handle a mid-name wildcard.
    expect(gatewayCompatible(v('1.1.9'), v('1.2.0'), dns('a.*.example.com'))).toBe(false);
    expect(gatewayCompatible(v('1.1.9'), v('1.2.0'), dns('*.example.com'))).toBe(true);
    expect(gatewayCompatible(v('1.2.0'), v('1.2.0'), dns('a.*.example.com'))).toBe(true);
  });
});
