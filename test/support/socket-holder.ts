/**
 * A child process that holds many client sockets of one token (`ws`), for runs of more sockets
 * than one process may open (20,000 files here). Driven over IPC (socket-holders.ts):
 *
 *   start: connects `count` clients (external ids `<prefix>-<i>`, `concurrency` handshakes in
 *          flight, each from an address of its own in `cf-connecting-ip`, a 5xx or reset retried),
 *          answers `{ kind: 'connected', inits, failed, ms }` once every one has its `init`;
 *   expect `{ event, id }`: answers `{ kind: 'received', n, lastAt }` once every socket got that frame
 *          (or 60 s passed), `lastAt` being Date.now() at the last one;
 *   stop:  closes everything and exits.
 */
import WebSocket from 'ws';
import { deviceSocketUrl } from '../../dev/device-url.ts';

export type HolderCommand =
  | { cmd: 'start'; url: string; token: string; count: number; prefix: string; concurrency: number; addressBase: string }
  | { cmd: 'expect'; event: string; id: string }
  | { cmd: 'stop' };

export type HolderReport = { kind: 'connected'; inits: number; failed: number; retries: number; ms: number; firstError?: string } | { kind: 'received'; n: number; lastAt: number };

const sockets: WebSocket[] = [];
/** Per socket, the frames it got after init: `event id` -> arrival time. */
const seen: Map<string, number>[] = [];

const send = (r: HolderReport) => process.send!(r);

function connectOne(url: string, address: string, index: number): Promise<'ok' | 'retry' | string> {
  return new Promise((resolve) => {
    const ws = new WebSocket(url, { perMessageDeflate: false, handshakeTimeout: 60_000, headers: { 'cf-connecting-ip': address } });
    const frames = new Map<string, number>();
    let inited = false;
    ws.on('message', (data) => {
      const text = data.toString();
      if (text === 'pong') return;
      const frame = JSON.parse(text) as { event: string; payload: { id?: string } };
      if (frame.event === 'init' && !inited) {
        inited = true;
        sockets[index] = ws;
        seen[index] = frames;
        // A keepalive at once, as devices do (docs/protocol.md#local-run).
        ws.send('ping');
        resolve('ok');
        return;
      }
      frames.set(`${frame.event} ${frame.payload.id ?? ''}`, Date.now());
    });
    ws.on('unexpected-response', (req, res) => {
      let body = '';
      res.on('data', (c: Buffer) => (body += c.toString()));
      res.on('end', () => {
        req.destroy();
        resolve((res.statusCode ?? 0) >= 500 ? 'retry' : `HTTP ${res.statusCode} ${body.slice(0, 200)}`);
      });
    });
    ws.on('error', () => {
      if (!inited) resolve('retry');
    });
  });
}

async function start(c: Extract<HolderCommand, { cmd: 'start' }>): Promise<void> {
  const t = Date.now();
  let next = 0;
  let failed = 0;
  let retries = 0;
  let firstError: string | undefined;
  const worker = async () => {
    for (;;) {
      const i = next++;
      if (i >= c.count) return;
      const url = deviceSocketUrl(c.url, 'client', {
        token: c.token,
        externalId: `${c.prefix}-${i}`,
        name: `${c.prefix}-${i}`,
        publicKey: `pk-${c.prefix}-${i}`,
        version: '1.4.2',
      });
      // One address per 250 devices' worth of the holder's block (10.x.y.z), as devices behind many networks.
      const address = `${c.addressBase}.${Math.floor(i / 250)}.${(i % 250) + 1}`;
      for (let attempt = 0; ; attempt++) {
        const outcome = await connectOne(url, address, i);
        if (outcome === 'ok') break;
        if (outcome !== 'retry' || attempt >= 8) {
          failed++;
          firstError ??= outcome;
          break;
        }
        retries++;
        await new Promise((r) => setTimeout(r, 100 * 2 ** attempt));
      }
    }
  };
  await Promise.all(Array.from({ length: c.concurrency }, worker));
  send({ kind: 'connected', inits: sockets.filter(Boolean).length, failed, retries, ms: Date.now() - t, ...(firstError ? { firstError } : {}) });
}

async function expectFrame(event: string, id: string): Promise<void> {
  const key = `${event} ${id}`;
  const deadline = Date.now() + 60_000;
  const count = () => seen.filter((m) => m?.has(key)).length;
  while (count() < sockets.filter(Boolean).length && Date.now() < deadline) await new Promise((r) => setTimeout(r, 20));
  const times = seen.flatMap((m) => (m?.has(key) ? [m.get(key)!] : []));
  send({ kind: 'received', n: times.length, lastAt: Math.max(0, ...times) });
}

process.on('message', (c: HolderCommand) => {
  if (c.cmd === 'start') void start(c);
  else if (c.cmd === 'expect') void expectFrame(c.event, c.id);
  else {
    for (const ws of sockets) ws?.terminate();
    process.exit(0);
  }
});
process.on('disconnect', () => process.exit(0));
