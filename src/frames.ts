import type { ServerMessage } from './messages.ts';

/**
 * The text of a frame the object sends (docs/protocol.md#websocket-routes). The type is the whole point: each
 * handler can build only a shape the protocol declares. It runs per socket in fan-outs of
 * thousands, so it is JSON.stringify and nothing more.
 */
export function frame(message: ServerMessage): string {
  return JSON.stringify(message);
}

/** An instant (epoch ms) as frames carry it, ISO-8601 UTC; null (no end) stays null. */
export function iso(ms: number | null): string | null {
  return ms === null ? null : new Date(ms).toISOString();
}
