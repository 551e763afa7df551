import { expect } from 'vitest';
import { basicSetup, TestAccount, type Basic } from './account.ts';
import { connect, type ConnectOptions, type Device, type Frame } from './device.ts';
import { database } from './world.ts';

export const sql = database();

export interface FlowWorld {
  account: TestAccount;
  s: Basic;
  siteToken: string;
  siteTokenId: string;
  gateway: Device;
  gatewayInit: Frame;
  client: Device;
  clientId: string;
}

/** A client and a gateway of the basic setup's site, both connected. */
export async function flowWorld(opts: { client?: ConnectOptions; gateway?: ConnectOptions; resource?: Record<string, unknown> } = {}): Promise<FlowWorld> {
  const account = await TestAccount.create(sql);
  const s = await basicSetup(account, opts.resource);
  let siteToken = '';
  let siteTokenId = '';
  await account.apply(async (t) => {
    const tok = await account.siteToken(t, s.site.id);
    siteToken = tok.token;
    siteTokenId = tok.row.id as string;
  });
  const gw = await connect('gateway', siteToken, opts.gateway);
  const cl = await connect('client', s.token, opts.client);
  return { account, s, siteToken, siteTokenId, gateway: gw.device, gatewayInit: gw.init, client: cl.device, clientId: cl.init.payload.client_id as string };
}

let refs = 0;

/** Sends create_flow and returns the client's answer (flow_created or flow_creation_failed). */
export async function createFlow(client: Device, resourceId: unknown, connected: string[] = [], ms = 5000): Promise<Frame> {
  const ref = `r${++refs}`;
  client.send({ event: 'create_flow', ref, payload: { resource_id: resourceId, connected_gateway_ids: connected } });
  for (;;) {
    const f = await client.next(undefined, ms);
    if (f.event === 'flow_created' || f.event === 'flow_creation_failed') return f;
    // Replies, and view changes that raced the request, are not the answer.
    if (f.event === 'reply' || f.event === 'resource_created_or_updated' || f.event === 'resource_deleted') continue;
    throw new Error(`unexpected frame ${JSON.stringify(f)}`);
  }
}

/** Creates a flow and returns the gateway's authorize_flow. */
export async function authorized(w: { client: Device; gateway: Device }, resourceId: unknown): Promise<Frame> {
  const answer = await createFlow(w.client, resourceId);
  expect(answer.event, JSON.stringify(answer)).toBe('flow_created');
  return await w.gateway.next('authorize_flow');
}
