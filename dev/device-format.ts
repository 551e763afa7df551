/** Readable lines for the frames a device gets (docs/protocol.md#websocket-routes). */
export interface Frame {
  event: string;
  ref?: string | number;
  payload?: Record<string, unknown>;
}

interface View {
  id: string;
  type?: string;
  name?: string;
  address?: string | null;
  ip_stack?: string | null;
  filters?: { protocol: string; ports?: string[] }[];
  sites?: { id: string; name: string }[];
}

const short = (id: unknown) => (typeof id === 'string' ? id.slice(0, 8) : String(id));

/** `Wiki  dns wiki.demo.internal  dual  tcp:22,8000-8100  via Home lab  [0546906c]` */
export function describeView(v: View): string {
  const filters = (v.filters ?? []).map((f) => `${f.protocol}${f.ports?.length ? `:${f.ports.join(',')}` : ''}`).join(' ');
  const sites = (v.sites ?? []).map((s) => s.name).join(', ');
  return [v.name ?? '?', [v.type, v.address].filter(Boolean).join(' '), v.ip_stack ?? '', filters || 'all traffic', sites ? `via ${sites}` : 'no site', `[${v.id}]`]
    .filter((s) => s !== '')
    .join('  ');
}

/**
 * The lines for one frame. `names` remembers resource names by id, so that a deletion can say
 * what went away and an update can be told from a creation.
 */
export function describeFrame(kind: 'client' | 'gateway', frame: Frame, names: Map<string, string>): string[] {
  const p = frame.payload ?? {};
  switch (frame.event) {
    case 'init': {
      if (kind === 'gateway') {
        const flows = (p.flows as { client_id: string; resource_id: string; expires_at: string | null }[] | undefined) ?? [];
        return [
          `init: gateway ${p.gateway_id} of site ${p.site_id}, ${flows.length} live flow${flows.length === 1 ? '' : 's'}`,
          ...flows.map((f) => `  flow: client ${short(f.client_id)} -> resource ${short(f.resource_id)} until ${f.expires_at ?? 'no end'}`),
        ];
      }
      const resources = (p.resources as View[] | undefined) ?? [];
      names.clear();
      for (const r of resources) names.set(r.id, r.name ?? r.id);
      return [
        `init: client ${p.client_id} of actor ${p.actor_id}, ${resources.length} resource${resources.length === 1 ? '' : 's'}`,
        ...resources.map((r) => `  ${describeView(r)}`),
      ];
    }
    case 'resource_created_or_updated': {
      const v = p as unknown as View;
      const known = names.has(v.id);
      names.set(v.id, v.name ?? v.id);
      return [`${known ? 'updated' : 'added  '} ${describeView(v)}`];
    }
    case 'resource_deleted': {
      const id = String(p.id);
      const name = names.get(id);
      names.delete(id);
      return [`removed ${name ?? 'resource'}  [${id}]`];
    }
    case 'flow_created':
      return [
        `flow created: resource ${short(p.resource_id)} via gateway ${short(p.gateway_id)} (site ${short(p.site_id)}), gateway key ${String(p.gateway_public_key).slice(0, 12)}...${p.ref !== undefined ? `  ref ${String(p.ref)}` : ''}`,
      ];
    case 'flow_creation_failed': {
      const violated = p.violated_properties as string[] | undefined;
      return [`flow refused: resource ${short(p.resource_id)}: ${p.reason}${violated?.length ? ` (${violated.join(', ')})` : ''}`];
    }
    case 'authorize_flow': {
      const client = p.client as { id: string; version: string } | undefined;
      const resource = p.resource as View | null | undefined;
      return [
        `authorize flow ${short(p.flow_id)}: client ${short(client?.id)} (${client?.version}) -> ${resource ? describeView(resource) : 'resource ?'}  until ${p.expires_at ?? 'no end'}`,
      ];
    }
    case 'reject_access':
      return [`reject access: client ${short(p.client_id)} -> resource ${short(p.resource_id)}`];
    case 'access_authorization_expiry_updated':
      return [`expiry updated: client ${short(p.client_id)} -> resource ${short(p.resource_id)} until ${p.expires_at ?? 'no end'}`];
    case 'resource_updated':
      return [`resource updated: ${describeView(p as unknown as View)}`];
    case 'reply':
      return [`reply ${String(frame.ref)}: ${JSON.stringify(p)}`];
    case 'error':
      return [`error: ${String(p.reason)}`];
    default:
      return [`${frame.event}: ${JSON.stringify(p)}`];
  }
}
