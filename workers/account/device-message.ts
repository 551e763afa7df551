import { readDeviceFrame } from '../../src/device-frames.ts';
import { errorSummary } from '../../src/errors.ts';
import type { FlowRecord } from '../../src/flows/flow-index.ts';
import type { FlowLimits } from '../../src/flows/limits.ts';
import type { FlowRateLimiter } from '../../src/flows/rate-limit.ts';
import { frame } from '../../src/frames.ts';
import { clientFrameSchema, type FlowRefusalReason } from '../../src/messages.ts';
import { log } from '../log.ts';
import { createFlow } from './create-flow.ts';
import type { AccountMemory, ObjectContext } from './object-context.ts';
import type { RemoteFlows } from './remote-gateways.ts';
import { attachmentOf, CLOSE, close, send, type ClientAttachment } from './sockets.ts';

/** What the object lends the handler of device frames. */
export interface DeviceMessageContext {
  object: ObjectContext;
  limits: FlowLimits;
  limiter: FlowRateLimiter;
  /** The account's memory, loaded from SQLite if need be; undefined for an object without an account. */
  memory(): Promise<AccountMemory | undefined>;
  /** A flow was stored: flush the log later, wake the alarm by its end. */
  created(flow: FlowRecord): Promise<void>;
  /** The account's gateways on its other objects (docs/architecture.md#relays). */
  remote: RemoteFlows;
}

/**
 * One frame from a device (docs/protocol.md#frames). Every refusal is an `error` frame on a
 * socket that stays open, and nothing escapes: whatever a device sends, the object goes on
 * serving the account's other sockets.
 */
export async function onDeviceMessage(c: DeviceMessageContext, ws: WebSocket, message: string | ArrayBuffer): Promise<void> {
  const a = attachmentOf(ws);
  // A socket the object closed (for flooding) may still deliver what it had sent: ignored, at no cost.
  if (!a || ws.readyState !== WebSocket.READY_STATE_OPEN) return;
  const fail = (reason: string) => send(ws, frame({ event: 'error', payload: { reason } }));
  try {
    const read = readDeviceFrame(message);
    if (!read.ok) return fail(read.reason);
    const { envelope } = read;
    if (a.kind === 'gateway' || envelope.event !== 'create_flow') return fail(`unknown event: ${envelope.event}`);
    const parsed = clientFrameSchema.safeParse(read.value);
    if (!parsed.success) return fail(`invalid ${envelope.event} payload: ${parsed.error.issues.map((i) => `${i.path.join('.')}: ${i.message}`).join('; ')}`);
    const request = parsed.data;
    const refuse = (reason: FlowRefusalReason, text: string) => {
      fail(text);
      if (request.ref !== undefined) send(ws, frame({ event: 'reply', ref: request.ref, payload: { status: 'error', reason } }));
    };
    const now = Date.now();
    const allowed = c.limiter.take(a.conn, now);
    if (!allowed.ok) {
      const { ratePerSecond, burst } = c.limits;
      // More refusals than a burst, net of what the rate forgives: the device does not wait as
      // told, and answering each request would only queue frames it does not read.
      if (allowed.debt > burst) return close(ws, CLOSE.policyViolation, 'create_flow rate limit exceeded');
      return refuse('rate_limited', `rate limited: create_flow at most ${ratePerSecond} per second (bursts of ${burst}); retry in ${allowed.retryInMs} ms`);
    }
    const memory = await c.memory();
    if (!memory) return;
    if (c.object.flowStore.logBacklog >= c.limits.logBacklogMax) {
      return refuse('flow_log_full', `flow log full: ${c.limits.logBacklogMax} flows wait for the database; retry later`);
    }
    const flow = await createFlow(c.object, memory, ws, a as ClientAttachment, request, now, c.limits.maxPerClient, c.remote);
    if (flow) await c.created(flow);
  } catch (err) {
    log.error({ component: 'account', account: c.object.meta.accountId, conn: a.conn, err: errorSummary(err) }, 'a device frame failed');
    fail('internal error');
  }
}
