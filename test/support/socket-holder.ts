/**
 * A child process that holds many device sockets (`ws`), for runs of more sockets than one
 * process may open (20,000 files here) and so the clients' work spreads over the cores. Driven
 * over IPC by socket-holders.ts, the one holder of the e2e suite and the benchmarks:
 *
 *   connect: opens every URL (`concurrency` handshakes in flight, each with its `cf-connecting-ip`
 *            if given, a 5xx, reset or missing init retried with backoff), answers `connected`
 *            with each URL's `init` arrival (wall-clock ms) once every one has one or failed;
 *   expect `{ event, id }`: answers `received` once every socket got that frame (or 60 s passed);
 *   close:  closes every socket and answers `closed`; stop: closes them and exits.
 */
import { performance } from 'node:perf_hooks';
import WebSocket from 'ws';

export interface HeldDevice {
  url: string;
  /** Sent as `cf-connecting-ip`: devices behind many networks. */
  address?: string;
}

export type HolderCommand =
  | { cmd: 'connect'; devices: HeldDevice[]; concurrency: number; keepalive: boolean }
  | { cmd: 'expect'; event: string; id: string }
  | { cmd: 'close' }
  | { cmd: 'stop' };

export type HolderReport =
  | { kind: 'connected'; initAt: number[]; inits: number; failed: number; retries: number; ms: number; firstError?: string }
  | { kind: 'received'; n: number; lastAt: number }
  | { kind: 'closed' };

const INIT_TIMEOUT_MS = 120_000;
const ATTEMPTS = 9;

let sockets: WebSocket[] = [];
/** Per socket, the frames it got after init: `event id` -> arrival time. */
let seen: Map<string, number>[] = [];

const send = (r: HolderReport) => process.send!(r);
/** Sub-millisecond and on the parent's Date.now() scale. */
const wallClock = () => performance.timeOrigin + performance.now();

function connectOne(device: HeldDevice, index: number, keepalive: boolean): Promise<{ ok: true; at: number } | { ok: false; retry: boolean; error: string }> {
  return new Promise((resolve) => {
    const headers = device.address ? { 'cf-connecting-ip': device.address } : undefined;
    const ws = new WebSocket(device.url, { perMessageDeflate: false, handshakeTimeout: 60_000, ...(headers ? { headers } : {}) });
    const frames = new Map<string, number>();
    let inited = false;
    const timer = setTimeout(() => {
      ws.terminate();
      resolve({ ok: false, retry: true, error: `no init within ${INIT_TIMEOUT_MS} ms` });
    }, INIT_TIMEOUT_MS);
    ws.on('message', (data) => {
      const at = wallClock();
      const text = data.toString();
      if (text === 'pong') return;
      const frame = JSON.parse(text) as { event: string; payload: { id?: string } };
      if (frame.event === 'init' && !inited) {
        inited = true;
        clearTimeout(timer);
        sockets[index] = ws;
        seen[index] = frames;
        // A keepalive at once, as devices do (docs/protocol.md#local-run).
        if (keepalive) ws.send('ping');
        resolve({ ok: true, at });
        return;
      }
      frames.set(`${frame.event} ${frame.payload.id ?? ''}`, at);
    });
    ws.on('unexpected-response', (req, res) => {
      let body = '';
      res.on('data', (c: Buffer) => (body += c.toString()));
      res.on('end', () => {
        clearTimeout(timer);
        req.destroy();
        resolve({ ok: false, retry: (res.statusCode ?? 0) >= 500, error: `HTTP ${res.statusCode} ${body.slice(0, 200)}` });
      });
    });
    ws.on('error', (err) => {
      if (inited) return;
      clearTimeout(timer);
      resolve({ ok: false, retry: true, error: err.message });
    });
  });
}

async function connect(c: Extract<HolderCommand, { cmd: 'connect' }>): Promise<void> {
  const t = Date.now();
  const initAt = new Array<number>(c.devices.length).fill(Number.NaN);
  let next = 0;
  let failed = 0;
  let retries = 0;
  let firstError: string | undefined;
  const worker = async () => {
    for (;;) {
      const i = next++;
      if (i >= c.devices.length) return;
      for (let attempt = 1; ; attempt++) {
        const outcome = await connectOne(c.devices[i]!, i, c.keepalive);
        if (outcome.ok) {
          initAt[i] = outcome.at;
          break;
        }
        if (!outcome.retry || attempt >= ATTEMPTS) {
          failed++;
          firstError ??= outcome.error;
          break;
        }
        retries++;
        await new Promise((r) => setTimeout(r, 100 * 2 ** (attempt - 1)));
      }
    }
  };
  await Promise.all(Array.from({ length: Math.min(c.concurrency, c.devices.length) }, worker));
  send({ kind: 'connected', initAt, inits: sockets.filter(Boolean).length, failed, retries, ms: Date.now() - t, ...(firstError ? { firstError } : {}) });
}

async function expectFrame(event: string, id: string): Promise<void> {
  const key = `${event} ${id}`;
  const deadline = Date.now() + 60_000;
  const count = () => seen.filter((m) => m?.has(key)).length;
  while (count() < sockets.filter(Boolean).length && Date.now() < deadline) await new Promise((r) => setTimeout(r, 20));
  const times = seen.flatMap((m) => (m?.has(key) ? [m.get(key)!] : []));
  send({ kind: 'received', n: times.length, lastAt: Math.max(0, ...times) });
}

function closeAll(): void {
  for (const ws of sockets) ws?.terminate();
  sockets = [];
  seen = [];
}

process.on('message', (c: HolderCommand) => {
  if (c.cmd === 'connect') void connect(c);
  else if (c.cmd === 'expect') void expectFrame(c.event, c.id);
  else if (c.cmd === 'close') {
    closeAll();
    send({ kind: 'closed' });
  } else {
    closeAll();
    process.exit(0);
  }
});
// The parent ended (or died): nothing is left to hold.
process.on('disconnect', () => process.exit(0));
