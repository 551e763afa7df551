import type { FlowCredentials } from '../../src/messages.ts';

const ALPHABET = 'abcdefghijklmnopqrstuvwxyzABCDEFGHIJKLMNOPQRSTUVWXYZ0123456789';

function randomText(length: number): string {
  const bytes = crypto.getRandomValues(new Uint8Array(length));
  let s = '';
  for (const b of bytes) s += ALPHABET[b % ALPHABET.length];
  return s;
}

function randomKey(): string {
  return btoa(String.fromCharCode(...crypto.getRandomValues(new Uint8Array(32))));
}

/** Fresh WireGuard preshared key and ICE credentials for one flow. */
export function newFlowCredentials(): FlowCredentials {
  return {
    preshared_key: randomKey(),
    client_ice: { username: randomText(8), password: randomText(24) },
    gateway_ice: { username: randomText(8), password: randomText(24) },
  };
}
