import type { ActorId, ClientId, PolicyId, ResourceId } from '../ids.ts';
import type { ClientMessage } from '../messages.ts';
import { buildView, digestOf } from '../resource-view.ts';
import { parseVersion, type Version } from '../versions.ts';
import type { AccountState } from './account-state.ts';
import { accessGrants, candidateResources, sitesOf, type ClientContext, type Grant } from './access.ts';

/** What a connected client was last sent: per connection, a digest per resource (the object keeps it in SQLite). */
export interface SentViews {
  of(conn: number): ReadonlyMap<ResourceId, number>;
  set(conn: number, resourceId: ResourceId, digest: number): void;
  delete(conn: number, resourceId: ResourceId): void;
}

/** The connection facts a client's views depend on (its socket attachment). */
export interface ClientConnection {
  conn: number;
  clientId: ClientId;
  actorId: ActorId;
  version: string;
  remoteIp: string | null;
  country: string | null;
}

interface RenderedView {
  json: string;
  digest: number;
}

/**
 * Views rendered once per (resource, version) during one pass: a change that reaches 5,000
 * clients of the same version serializes each affected resource once.
 */
export class ViewRenderer {
  private readonly rendered = new Map<string, RenderedView | null>();
  private readonly versions = new Map<string, Version>();
  private readonly conditionTexts = new Map<PolicyId, string>();

  constructor(private readonly state: AccountState) {}

  version(text: string): Version {
    let v = this.versions.get(text);
    if (!v) {
      // Versions were validated on connect; a stored one that no longer parses sees nothing new.
      v = parseVersion(text) ?? { major: 0, minor: 0, patch: 0 };
      this.versions.set(text, v);
    }
    return v;
  }

  render(resourceId: ResourceId, versionText: string): RenderedView | null {
    const key = `${resourceId}|${versionText}`;
    let r = this.rendered.get(key);
    if (r === undefined) {
      const resource = this.state.resources.get(resourceId);
      const view = resource ? buildView(resource, sitesOf(this.state, resourceId), this.version(versionText)) : null;
      r = view ? { json: JSON.stringify(view), digest: 0 } : null;
      if (r) r.digest = digestOf(r.json);
      this.rendered.set(key, r);
    }
    return r;
  }

  /**
   * The digest a client is sent a resource under: its view and the distinct condition lists that
   * grant it. A condition change that still grants re-sends the view; a description change, or a
   * second grant with the same conditions appearing or going away, sends nothing.
   */
  digest(view: RenderedView, grants: readonly Grant[]): number {
    const texts = new Set<string>();
    for (const g of grants) {
      let text = this.conditionTexts.get(g.policyId);
      if (text === undefined) {
        text = JSON.stringify(this.state.policies.get(g.policyId)?.conditions ?? null);
        this.conditionTexts.set(g.policyId, text);
      }
      texts.add(text);
    }
    if (texts.size === 1 && texts.has('[]')) return view.digest;
    return digestOf(`${view.digest}|${[...texts].sort().join('|')}`);
  }
}

export function clientContext(a: ClientConnection, renderer: ViewRenderer): ClientContext {
  return { clientId: a.clientId, actorId: a.actorId, version: renderer.version(a.version), remoteIp: a.remoteIp, country: a.country };
}

/**
 * A frame around a payload already rendered as JSON: views are serialized once per (resource,
 * version) and spliced into every client's frame, rather than each frame going through `frame()`.
 */
const splicedFrame = (event: ClientMessage['event'], payloadJson: string) => `{"event":"${event}","payload":${payloadJson}}`;

/** The `init` frame of a new connection, recording every view it carries. */
export function initClient(state: AccountState, views: SentViews, renderer: ViewRenderer, a: ClientConnection, nowMs: number): string {
  const ctx = clientContext(a, renderer);
  const parts: string[] = [];
  for (const resourceId of candidateResources(state, a.actorId)) {
    const grants = accessGrants(state, ctx, resourceId, nowMs);
    const view = grants.length > 0 ? renderer.render(resourceId, a.version) : null;
    if (!view) continue;
    parts.push(view.json);
    views.set(a.conn, resourceId, renderer.digest(view, grants));
  }
  return splicedFrame('init', `{"client_id":"${a.clientId}","actor_id":"${a.actorId}","resources":[${parts.join(',')}]}`);
}

/**
 * Recomputes `resources` for one client against what it was last sent, records the new digests
 * and returns the frames of the difference (docs/architecture.md#7-diffs-not-re-sends): a view that changed is sent
 * again, one that is gone is deleted, an unchanged one sends nothing. `standing`: as in accessGrants.
 */
export function diffClient(
  state: AccountState,
  views: SentViews,
  renderer: ViewRenderer,
  a: ClientConnection,
  resources: 'all' | ReadonlySet<ResourceId>,
  nowMs: number,
  standing = false,
): string[] {
  const ctx = clientContext(a, renderer);
  const sent = views.of(a.conn);
  const ids = resources === 'all' ? new Set([...candidateResources(state, a.actorId), ...sent.keys()]) : resources;
  const frames: string[] = [];
  for (const resourceId of ids) {
    const grants = accessGrants(state, ctx, resourceId, nowMs, standing);
    const view = grants.length > 0 ? renderer.render(resourceId, a.version) : null;
    const before = sent.get(resourceId);
    if (view) {
      const digest = renderer.digest(view, grants);
      if (before === digest) continue;
      views.set(a.conn, resourceId, digest);
      frames.push(splicedFrame('resource_created_or_updated', view.json));
    } else if (before !== undefined) {
      views.delete(a.conn, resourceId);
      frames.push(splicedFrame('resource_deleted', `{"id":"${resourceId}"}`));
    }
  }
  return frames;
}
