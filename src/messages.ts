import { z } from 'zod';
import type { ActorId, ClientId, FlowId, GatewayId, ResourceId, SiteId } from './ids.ts';
import type { ResourceView } from './resource-view.ts';

/**
 * WebSocket frames (docs/protocol.md#websocket-routes): JSON text `{"event", "payload", "ref"?}`. Device frames
 * are validated here, once; server frames are typed so that each handler builds exactly one shape.
 */
const uuid = z
  .string()
  .max(36)
  .regex(/^[0-9a-f]{8}-[0-9a-f]{4}-[0-9a-f]{4}-[0-9a-f]{4}-[0-9a-f]{12}$/i, { message: 'expected a uuid' })
  .transform((s) => s.toLowerCase());
/** A request's reference, echoed in its reply: a string of at most 256 characters or a finite number. */
const ref = z.union([z.string().max(256), z.number()]).optional();

export const clientFrameSchema = z.discriminatedUnion('event', [
  z.object({
    event: z.literal('create_flow'),
    ref,
    payload: z.object({
      resource_id: uuid,
      connected_gateway_ids: z.array(uuid).max(1000).default([]),
    }),
  }),
]);
export type ClientFrame = z.infer<typeof clientFrameSchema>;

/** Gateways send no requests in this protocol version; any event is answered with an error. */
export const gatewayFrameSchema = z.never();

/** Every device frame: the event name is at most 64 characters (the frame's size and depth are checked before parsing, src/device-frames.ts). */
export const frameEnvelopeSchema = z.object({ event: z.string().max(64), ref, payload: z.unknown().optional() });
export type FrameEnvelope = z.infer<typeof frameEnvelopeSchema>;

export interface FlowCredentials {
  preshared_key: string;
  client_ice: { username: string; password: string };
  gateway_ice: { username: string; password: string };
}

/** Why `create_flow` failed (docs/protocol.md#websocket-routes, `flow_creation_failed`). */
export type FlowFailureReason = 'not_found' | 'forbidden' | 'offline';

export type ClientMessage =
  | { event: 'init'; payload: { client_id: ClientId; actor_id: ActorId; resources: ResourceView[] } }
  | { event: 'resource_created_or_updated'; payload: ResourceView }
  | { event: 'resource_deleted'; payload: { id: ResourceId } }
  | { event: 'flow_created'; payload: { ref?: string | number; resource_id: ResourceId; gateway_id: GatewayId; site_id: SiteId; gateway_public_key: string } & FlowCredentials }
  | { event: 'flow_creation_failed'; payload: { resource_id: ResourceId; reason: FlowFailureReason; violated_properties?: string[] } };

export interface GatewayFlowView {
  flow_id: FlowId;
  client_id: ClientId;
  resource_id: ResourceId;
  expires_at: string | null;
}

export type GatewayMessage =
  | { event: 'init'; payload: { gateway_id: GatewayId; site_id: SiteId; flows: GatewayFlowView[] } }
  | {
      event: 'authorize_flow';
      payload: {
        flow_id: FlowId;
        client: { id: ClientId; public_key: string; version: string };
        /** null only if the gateway's version cannot handle the resource, which choosing a compatible gateway rules out. */
        resource: ResourceView | null;
        expires_at: string | null;
      } & FlowCredentials;
    }
  | { event: 'reject_access'; payload: { client_id: ClientId; resource_id: ResourceId } }
  | { event: 'access_authorization_expiry_updated'; payload: { client_id: ClientId; resource_id: ResourceId; expires_at: string | null } }
  | { event: 'resource_updated'; payload: ResourceView };

/**
 * Why a `create_flow` was refused before it was decided (docs/protocol.md#limits): the socket's
 * rate limit, or the object's flow log is too far behind Postgres. Sent in `reply` only; the
 * `error` event that accompanies it says more.
 */
export type FlowRefusalReason = 'rate_limited' | 'flow_log_full';

/** The answer to a device request that carried a `ref` (`create_flow` is the only request). */
export type ReplyPayload = { status: 'ok'; flow_id: FlowId } | { status: 'error'; reason: FlowFailureReason | FlowRefusalReason };

export type CommonMessage = { event: 'reply'; ref: string | number; payload: ReplyPayload } | { event: 'error'; payload: { reason: string } };

export type ServerMessage = ClientMessage | GatewayMessage | CommonMessage;
