/**
 * Client and gateway versions (docs/protocol.md#versions): what an older device can be shown of a resource, and
 * which gateways may serve a client.
 */
export interface Version {
  major: number;
  minor: number;
  patch: number;
}

export type AdaptableResource = { type: 'dns' | 'ip' | 'cidr' | 'internet'; address: string | null };

const NUM = '(0|[1-9]\\d*)';
const IDENTS = '[0-9A-Za-z-]+(?:\\.[0-9A-Za-z-]+)*';
const SEMVER = new RegExp(`^${NUM}\\.${NUM}\\.${NUM}(?:-${IDENTS})?(?:\\+${IDENTS})?$`);

/** Semver `MAJOR.MINOR.PATCH` with optional -prerelease/+build (ignored for comparison). null when unparseable. */
export function parseVersion(text: string | null | undefined): Version | null {
  const m = text ? SEMVER.exec(text) : null;
  if (!m) return null;
  const [major, minor, patch] = [Number(m[1]), Number(m[2]), Number(m[3])];
  if (![major, minor, patch].every(Number.isSafeInteger)) return null;
  return { major, minor, patch };
}

export function compareVersions(a: Version, b: Version): number {
  return Math.sign(a.major - b.major || a.minor - b.minor || a.patch - b.patch);
}

const v = (major: number, minor: number, patch: number): Version => ({ major, minor, patch });
const INTERNET_SINCE = v(1, 3, 0);
const WILDCARDS_SINCE = v(1, 2, 0);

/**
 * Before 1.2.0 clients spelled the wildcards differently (`*` for today's `**`, `?` for `*`) and
 * allowed only one, in front.
 */
function legacyDnsAddress(address: string): string | null {
  const [lead, rest] = address.startsWith('**') ? ['*', address.slice(2)] : address.startsWith('*') ? ['?', address.slice(1)] : ['', address];
  if (/[*?]/.test(rest)) return null;
  return lead + rest;
}

/**
 * What a device of this version sees of a resource address: the address itself, a rewritten
 * address, or null (the device cannot handle it: hide it).
 */
export function adaptResource(resource: AdaptableResource, version: Version): { address: string | null } | null {
  if (resource.type === 'internet' && compareVersions(version, INTERNET_SINCE) < 0) return null;
  if (resource.type === 'dns' && resource.address !== null && compareVersions(version, WILDCARDS_SINCE) < 0) {
    const address = legacyDnsAddress(resource.address);
    return address === null ? null : { address };
  }
  return { address: resource.address };
}

/**
 * docs/protocol.md#versions: gateway version >= client major.(minor-1).0 and < major.(minor+2).0 (lexicographic
 * tuples, so minor-1 = -1 admits any minor of that major), and the gateway can handle the resource
 * by adaptResource's rules (adaptResource(resource, gatewayVersion) !== null).
 */
export function gatewayCompatible(gateway: Version, client: Version, resource: AdaptableResource): boolean {
  const low = v(client.major, client.minor - 1, 0);
  const high = v(client.major, client.minor + 2, 0);
  return compareVersions(gateway, low) >= 0 && compareVersions(gateway, high) < 0 && adaptResource(resource, gateway) !== null;
}
