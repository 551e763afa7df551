import { frameEnvelopeSchema, type FrameEnvelope } from './messages.ts';

/**
 * What a device frame may be before the object looks inside it (docs/protocol.md#frames): at most
 * 64 KiB of UTF-8 and 16 levels of JSON nesting, both checked before JSON.parse runs.
 */
export const FRAME_LIMITS = { maxBytes: 64 * 1024, maxDepth: 16 } as const;

export type ReadFrame = { ok: true; value: unknown; envelope: FrameEnvelope } | { ok: false; reason: string };

const tooLarge = `frame too large: at most ${FRAME_LIMITS.maxBytes} bytes`;

/** The UTF-8 length of `s`, or of a prefix of it once past `limit` (then > limit). Lone surrogates count as U+FFFD, 3 bytes. */
export function utf8Length(s: string, limit: number): number {
  let n = 0;
  for (let i = 0; i < s.length && n <= limit; i++) {
    const c = s.charCodeAt(i);
    if (c < 0x80) n += 1;
    else if (c < 0x800) n += 2;
    else if (c >= 0xd800 && c <= 0xdbff && i + 1 < s.length && (s.charCodeAt(i + 1) & 0xfc00) === 0xdc00) {
      n += 4;
      i++;
    } else n += 3;
  }
  return n;
}

/**
 * Whether JSON text nests objects and arrays deeper than `max`, by one pass over it that skips
 * strings. Exact for valid JSON; for anything else JSON.parse decides.
 */
export function nestsDeeperThan(text: string, max: number): boolean {
  let depth = 0;
  let inString = false;
  for (let i = 0; i < text.length; i++) {
    const c = text.charCodeAt(i);
    if (inString) {
      if (c === 0x5c)
        i++; // backslash: skip the escaped character
      else if (c === 0x22) inString = false;
    } else if (c === 0x22) inString = true;
    else if (c === 0x7b || c === 0x5b) {
      if (++depth > max) return true;
    } else if (c === 0x7d || c === 0x5d) depth--;
  }
  return false;
}

/**
 * A device frame, checked in order of cost: binary or too large (by length alone), too deeply
 * nested, not JSON, not an envelope. Never throws.
 */
export function readDeviceFrame(message: string | ArrayBuffer): ReadFrame {
  if (typeof message !== 'string') {
    return { ok: false, reason: message.byteLength > FRAME_LIMITS.maxBytes ? tooLarge : 'binary frames are not supported; send JSON text' };
  }
  // A UTF-16 code unit is 1 to 3 UTF-8 bytes: only lengths in between need counting.
  if (message.length > FRAME_LIMITS.maxBytes) return { ok: false, reason: tooLarge };
  if (message.length * 3 > FRAME_LIMITS.maxBytes && utf8Length(message, FRAME_LIMITS.maxBytes) > FRAME_LIMITS.maxBytes) return { ok: false, reason: tooLarge };
  if (nestsDeeperThan(message, FRAME_LIMITS.maxDepth)) return { ok: false, reason: `frame nested too deeply: at most ${FRAME_LIMITS.maxDepth} levels` };
  let value: unknown;
  try {
    value = JSON.parse(message);
  } catch {
    return { ok: false, reason: 'malformed JSON' };
  }
  const envelope = frameEnvelopeSchema.safeParse(value);
  if (!envelope.success) return { ok: false, reason: 'expected {"event": string, "payload": object, "ref"?: string|number}' };
  return { ok: true, value, envelope: envelope.data };
}
