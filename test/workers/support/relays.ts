import { env, runInDurableObject } from 'cloudflare:test';
import type { AccountDO } from '../../../workers/account/account-do.ts';
import { REGION_HEADER, relayName } from '../../../workers/account/relay-placement.ts';
import { followPlacement } from '../../../workers/account/relay-writer.ts';
import { Device, websocketUrl, type ConnectOptions, type Frame } from './device.ts';

export const writerOf = (accountId: string) => env.ACCOUNT.get(env.ACCOUNT.idFromName(accountId));
export const relayOf = (accountId: string, region: string, n = 0) => env.ACCOUNT.get(env.ACCOUNT.idFromName(relayName(accountId, region, n)));

/**
 * Connects straight to the account's writer as the Worker would (following its placement to a relay), from a device of `region` (the
 * Worker's continent header, which a device cannot set through the Worker): the writer holds the
 * first region's devices and places another region's on a relay (docs/architecture.md#relays).
 */
export async function connectFrom(region: string, kind: 'client' | 'gateway', token: string, opts: ConnectOptions = {}): Promise<{ device: Device; init: Frame }> {
  const accountId = token.split('.')[0]!;
  const request = new Request(websocketUrl(kind, token, opts), { headers: { upgrade: 'websocket', [REGION_HEADER]: region } });
  const placed = await followPlacement(env, accountId, request, await writerOf(accountId).fetch(new Request(request)));
  await placed.report?.();
  const res = placed.response;
  if (res.status !== 101 || !res.webSocket) throw new Error(`connect: ${res.status} ${await res.text()}`);
  res.webSocket.accept();
  const device = new Device(res.webSocket, opts.externalId ?? '');
  return { device, init: await device.next('init') };
}

/** The writer's relays as it records them: name, socket count and acknowledged position. */
export async function relaysOfWriter(accountId: string): Promise<{ name: string; sockets: number; acked: string }[]> {
  return await runInDurableObject(writerOf(accountId), (_: AccountDO, state) =>
    state.storage.sql.exec<{ name: string; sockets: number; acked: string }>('select name, sockets, acked from relay_peers order by name').toArray(),
  );
}

/** The writer's position (what a relay catches up to). */
export async function positionOf(stub: DurableObjectStub<AccountDO>): Promise<string | null> {
  return await runInDurableObject(
    stub,
    (_: AccountDO, state) => state.storage.sql.exec<{ value: string }>("select value from meta where key = 'position'").toArray()[0]?.value ?? null,
  );
}

/** Replaces the writer's stub factory in its instance, so that every forward to a relay calls `relayBatch` instead. */
async function replaceRelays(accountId: string, relayBatch: () => Promise<never>): Promise<void> {
  await runInDurableObject(writerOf(accountId), (instance: AccountDO) => {
    (instance as unknown as { relayStub: unknown }).relayStub = () => ({ relayBatch });
  });
}

/**
 * Makes every forward from the writer to its relays fail until the returned function is called
 * (a relay unreachable for a while).
 */
export async function cutRelays(accountId: string): Promise<() => Promise<void>> {
  await replaceRelays(accountId, () => Promise.reject(new Error('relay unreachable (test)')));
  return async () => {
    await runInDurableObject(writerOf(accountId), (instance: AccountDO) => {
      delete (instance as unknown as { relayStub?: unknown }).relayStub;
    });
  };
}

/**
 * Makes every forward from the writer to its relays wait for ever (a relay that never answers),
 * for as long as the instance lives: a test ends the instance mid-forward with `state.abort()`.
 */
export async function stallRelays(accountId: string): Promise<void> {
  await replaceRelays(accountId, () => new Promise<never>(() => {}));
}

/** Makes the writer's forwards to one relay wait for ever (a relay that hangs), the others untouched, until the returned function is called. */
export async function stallRelay(accountId: string, name: string): Promise<() => Promise<void>> {
  await runInDurableObject(writerOf(accountId), (instance: AccountDO) => {
    const seam = instance as unknown as { relayStub: (relay: string) => unknown };
    const real = seam.relayStub.bind(instance);
    const hang = () => new Promise<never>(() => {});
    seam.relayStub = (relay: string) => (relay === name ? { relayBatch: hang, relayPresence: hang } : real(relay));
  });
  return async () => {
    await runInDurableObject(writerOf(accountId), (instance: AccountDO) => {
      delete (instance as unknown as { relayStub?: unknown }).relayStub;
    });
  };
}

/** Whether this run places every device on relays (the workers-relays project). */
export const relaysForced = (env as unknown as Record<string, unknown>).RELAY_PLACEMENT === 'always';

/**
 * The object that holds a test's first two devices: the writer, or with every device on relays
 * of two sockets (the workers-relays project), the first relay; for tests that read an object's
 * alarm, flows or storage about its sockets.
 */
export const holderOf = (accountId: string) => (relaysForced ? relayOf(accountId, 'local', 0) : writerOf(accountId));
