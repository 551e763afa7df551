import type { FlowRecord } from '../../src/flows/flow-index.ts';
import type { FlowId, GatewayId, SiteId } from '../../src/ids.ts';
import type { ClientRecord, GatewayRecord } from '../../src/records.ts';

/**
 * A gateway connected to another object of the account (docs/architecture.md#relays): the
 * writer ('' ) or a relay, by name. The writer keeps the account's list and sends it to every
 * relay whenever it changes, so that a client's object decides a flow without asking anyone.
 */
export interface RemoteGateway {
  id: GatewayId;
  siteId: SiteId;
  version: string;
  holder: string;
  /**
   * The gateway's row as its holder cached it on connect: the other objects may not have it from
   * the stream yet (a new or changed gateway), and flow_created needs its public key.
   */
  record: GatewayRecord;
}

/** What a client's object hands the object that holds the chosen gateway (and those of displaced flows). */
export interface FlowHandoff {
  /** The new flow, on the holder's gateway: it owns it from now on (reviews, reject_access, the flow log). */
  flow: FlowRecord | null;
  /**
   * The flow's client as the client's object cached it when it connected: the owner may not have
   * its row from the stream yet, and reviews its flows by the client's actor.
   */
  client: ClientRecord | null;
  /** Its flow log row (JSON), written by the owner. */
  logRow: string | null;
  /** Frames for the holder's gateway sockets: authorize_flow, and the notices of displaced flows. */
  frames: { gatewayId: GatewayId; text: string }[];
  /** Flows displaced by the new one that this holder owns. */
  drop: FlowId[];
}

/** How an object reaches the rest of its account for flows. */
export interface RemoteFlows {
  /** Gateways online on the account's other objects. */
  gateways(): readonly RemoteGateway[];
  /** Hands a flow (or only frames and drops) to the holder; throws when it cannot be reached. */
  handOff(holder: string, handoff: FlowHandoff): Promise<HandoffResult>;
}

/** The holder's answer: it took the flow, or its gateway left, or its flow log is full. */
export type HandoffResult = { ok: true } | { ok: false; reason: 'offline' } | { ok: false; reason: 'flow_log_full'; detail: string };
