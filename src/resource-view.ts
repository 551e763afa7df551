import type { ResourceId, SiteId } from './ids.ts';
import type { Filter, IpStack, ResourceRecord, ResourceType, SiteRecord } from './records.ts';
import { adaptResource, type Version } from './versions.ts';

/** docs/protocol.md#websocket-routes: what a device is told about a resource. */
export interface ResourceView {
  id: ResourceId;
  type: ResourceType;
  name: string;
  address: string | null;
  address_description: string | null;
  ip_stack: IpStack | null;
  filters: Filter[];
  sites: { id: SiteId; name: string }[];
}

/**
 * The view of a resource for a device of `version`, listing its (non-deleted) sites in name
 * order; null when the device's version cannot handle the resource (docs/protocol.md#versions).
 */
export function buildView(resource: ResourceRecord, sites: readonly SiteRecord[], version: Version): ResourceView | null {
  const adapted = adaptResource(resource, version);
  if (!adapted) return null;
  return {
    id: resource.id,
    type: resource.type,
    name: resource.name,
    address: adapted.address,
    address_description: resource.addressDescription,
    ip_stack: resource.ipStack,
    filters: resource.filters,
    sites: [...sites].sort((a, b) => (a.name < b.name ? -1 : a.name > b.name ? 1 : a.id < b.id ? -1 : 1)).map((s) => ({ id: s.id, name: s.name })),
  };
}

/**
 * A 53-bit digest of a view's JSON (cyrb53): what the object remembers of each view it sent, so
 * that it sends a view again only when it changed. Not cryptographic; a collision would only
 * suppress one update of a view whose access did not change.
 */
export function digestOf(json: string): number {
  let h1 = 0xdeadbeef;
  let h2 = 0x41c6ce57;
  for (let i = 0; i < json.length; i++) {
    const ch = json.charCodeAt(i);
    h1 = Math.imul(h1 ^ ch, 2654435761);
    h2 = Math.imul(h2 ^ ch, 1597334677);
  }
  h1 = Math.imul(h1 ^ (h1 >>> 16), 2246822507) ^ Math.imul(h2 ^ (h2 >>> 13), 3266489909);
  h2 = Math.imul(h2 ^ (h2 >>> 16), 2246822507) ^ Math.imul(h1 ^ (h1 >>> 13), 3266489909);
  return 4294967296 * (2097151 & h2) + (h1 >>> 0);
}
