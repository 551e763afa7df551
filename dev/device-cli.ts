/**
 * `npm run client` and `npm run gateway`: a device on the Worker's WebSocket (docs/protocol.md#websocket-routes),
 * printing each event as a readable line (raw JSON with --json). The client can ask for flows.
 */
import { randomBytes } from 'node:crypto';
import { hostname } from 'node:os';
import { createInterface } from 'node:readline';
import { parseArgs } from 'node:util';
import WebSocket from 'ws';
import { errorMessage } from '../src/errors.ts';
import { isUuid } from '../src/ids.ts';
import { parseToken } from '../src/tokens.ts';
import { describeFrame, type Frame } from './device-format.ts';
import { deviceSocketUrl, type DeviceKind } from './device-url.ts';
import { readDevJson } from './local-files.ts';

export class UsageError extends Error {
  override name = 'UsageError';
}

export interface DeviceArgs {
  kind: DeviceKind;
  token: string | undefined;
  demo: boolean;
  url: string | undefined;
  json: boolean;
  externalId: string;
  name: string;
  publicKey: string;
  version: string;
  ip: string | undefined;
  country: string | undefined;
  flows: string[];
  reconnect: boolean;
}

export function usage(kind: DeviceKind): string {
  const token = kind === 'client' ? 'client token' : 'site token';
  return [
    `usage: npm run ${kind} -- (--token T | --demo) [options]`,
    '',
    `Connects a ${kind} like a real device and prints each event as it arrives.`,
    '',
    `  --token T            a ${token}: <account_id>.<token_id>.<secret>`,
    `  --demo               the demo ${token} from .edgeplane/dev.json (written by npm start)`,
    '  --url URL            the Worker (default: workerUrl of .edgeplane/dev.json, else http://127.0.0.1:8787)',
    '  --json               print each frame as received, one JSON per line (status lines go to stderr)',
    `  --external-id ID     the device's stable id (default: ${hostname()}-${kind})`,
    `  --name NAME          (default: ${hostname()})`,
    '  --public-key KEY     (default: a random key per run)',
    '  --version V          the device version, semver (default: 1.4.2)',
    '  --ip IP, --country CC  local testing of conditions: sent as cf-connecting-ip / cf-ipcountry',
    ...(kind === 'client' ? ['  --flow RESOURCE_ID   ask for a flow to the resource once connected (repeatable)'] : []),
    '  --no-reconnect       exit when the connection drops instead of reconnecting',
    '',
    ...(kind === 'client' ? ['Commands on stdin: `flow RESOURCE_ID [GATEWAY_ID...]`, a raw JSON frame, `ping`, `quit`.', ''] : []),
  ].join('\n');
}

export function parseDeviceArgs(kind: DeviceKind, argv: string[]): DeviceArgs {
  let parsed;
  try {
    parsed = parseArgs({
      args: argv,
      strict: true,
      allowPositionals: false,
      options: {
        token: { type: 'string' },
        demo: { type: 'boolean', default: false },
        url: { type: 'string' },
        json: { type: 'boolean', default: false },
        'external-id': { type: 'string' },
        name: { type: 'string' },
        'public-key': { type: 'string' },
        version: { type: 'string' },
        ip: { type: 'string' },
        country: { type: 'string' },
        flow: { type: 'string', multiple: true },
        'no-reconnect': { type: 'boolean', default: false },
        help: { type: 'boolean', short: 'h', default: false },
      },
    });
  } catch (err) {
    throw new UsageError(errorMessage(err));
  }
  const v = parsed.values;
  if (v.help) throw new UsageError('');
  if (!v.token && !v.demo) throw new UsageError('--token or --demo is required');
  if (v.token && v.demo) throw new UsageError('--token and --demo exclude each other');
  if (v.token && !parseToken(v.token)) throw new UsageError('--token must look like <account_id>.<token_id>.<secret>');
  if (kind === 'gateway' && v.flow?.length) throw new UsageError('--flow is for clients');
  if (v.url && !/^(https?|wss?):\/\//.test(v.url)) throw new UsageError('--url must be an http(s):// or ws(s):// URL');
  if (v.version !== undefined && !/^\d+\.\d+\.\d+/.test(v.version)) throw new UsageError('--version must be a semantic version like 1.4.2');
  for (const id of v.flow ?? []) if (!isUuid(id)) throw new UsageError(`--flow ${id} is not a resource id (uuid)`);
  return {
    kind,
    token: v.token,
    demo: v.demo,
    url: v.url,
    json: v.json,
    externalId: v['external-id'] ?? `${hostname()}-${kind}`,
    name: v.name ?? hostname(),
    publicKey: v['public-key'] ?? randomBytes(32).toString('base64'),
    version: v.version ?? '1.4.2',
    ip: v.ip,
    country: v.country,
    flows: v.flow ?? [],
    reconnect: !v['no-reconnect'],
  };
}

const stamp = () => new Date().toISOString().slice(11, 23);

/** Close codes after which reconnecting cannot help. */
const FINAL_CLOSES = new Map([
  [4001, 'token deleted or expired'],
  [4003, 'access revoked'],
]);

export async function runDevice(kind: DeviceKind, argv: string[]): Promise<number> {
  let args: DeviceArgs;
  try {
    args = parseDeviceArgs(kind, argv);
  } catch (err) {
    if (!(err instanceof UsageError)) throw err;
    if (err.message) process.stderr.write(`npm run ${kind}: ${err.message}\n\n`);
    process.stderr.write(usage(kind));
    return err.message ? 2 : 0;
  }
  let token = args.token;
  let url = args.url;
  if (args.demo || !url) {
    const dev = await readDevJson().catch((err: unknown) => {
      if (args.demo) throw new UsageError(errorMessage(err));
      return undefined;
    });
    url ??= dev?.workerUrl ?? 'http://127.0.0.1:8787';
    if (args.demo) {
      if (!dev?.demo) throw new UsageError('.edgeplane/dev.json has no demo account');
      token = kind === 'client' ? dev.demo.clientToken : dev.demo.siteToken;
    }
  }
  const out = (line: string) => process.stdout.write(`${line}\n`);
  const status = (line: string) => (args.json ? process.stderr : process.stdout).write(`${stamp()} ${line}\n`);
  const target = deviceSocketUrl(url, kind, { token: token!, externalId: args.externalId, name: args.name, publicKey: args.publicKey, version: args.version });
  const headers: Record<string, string> = {};
  if (args.ip) headers['cf-connecting-ip'] = args.ip;
  if (args.country) headers['cf-ipcountry'] = args.country;

  const names = new Map<string, string>();
  let socket: WebSocket | undefined;
  let nextRef = 1;
  let stopping = false;
  const sendFrame = (frame: object) => {
    if (!socket || socket.readyState !== WebSocket.OPEN) return status('not connected; command dropped');
    socket.send(JSON.stringify(frame));
  };
  const createFlow = (resourceId: string, gateways: string[] = []) =>
    sendFrame({ event: 'create_flow', ref: nextRef++, payload: { resource_id: resourceId, connected_gateway_ids: gateways } });

  if (kind === 'client') {
    createInterface({ input: process.stdin }).on('line', (raw) => {
      const line = raw.trim();
      if (line === '') return;
      if (line === 'quit' || line === 'exit') return stop();
      if (line === 'ping') return socket?.readyState === WebSocket.OPEN ? socket.send('ping') : status('not connected');
      if (line.startsWith('{')) return socket?.readyState === WebSocket.OPEN ? socket.send(line) : status('not connected');
      const [cmd, id, ...gateways] = line.split(/\s+/);
      if (cmd === 'flow' && id) return createFlow(id, gateways);
      status('commands: flow RESOURCE_ID [GATEWAY_ID...] | {json frame} | ping | quit');
    });
  }

  let finish: (code: number) => void = () => {};
  const done = new Promise<number>((resolve) => (finish = resolve));
  function stop(): void {
    stopping = true;
    if (socket && socket.readyState === WebSocket.OPEN) socket.close(1000, 'bye');
    else finish(0);
  }
  process.on('SIGINT', stop);
  process.on('SIGTERM', stop);

  let attempt = 0;
  let askedFlows = false;
  const connect = () => {
    status(`connecting ${kind} ${args.externalId} to ${url}${attempt > 0 ? ` (attempt ${attempt + 1})` : ''}`);
    const ws = new WebSocket(target, { headers });
    socket = ws;
    let pinger: NodeJS.Timeout | undefined;
    /** Set once this connection's outcome was acted on, so that the events that follow it are ignored. */
    let settled = false;
    const settle = (action: () => void) => {
      if (settled) return;
      settled = true;
      clearInterval(pinger);
      action();
    };
    ws.on('unexpected-response', (req, res) => {
      let body = '';
      res.on('data', (d: Buffer) => (body += d.toString()));
      res.on('end', () =>
        settle(() => {
          status(`refused: HTTP ${res.statusCode} ${body.trim()}`);
          req.destroy();
          // 4xx: the token or the parameters are wrong; retrying will not help.
          if ((res.statusCode ?? 500) < 500 || !args.reconnect) finish(1);
          else retry();
        }),
      );
    });
    ws.on('open', () => {
      attempt = 0;
      // The keepalive starts at once: workerd keeps a socket that has carried no frame from the
      // device open for ~10 s after the object closes it (docs/protocol.md#local-run).
      ws.send('ping');
      pinger = setInterval(() => ws.readyState === WebSocket.OPEN && ws.send('ping'), 30_000);
    });
    ws.on('message', (data) => {
      const text = data.toString();
      if (text === 'pong') return;
      if (args.json) return out(text);
      let frame: Frame;
      try {
        frame = JSON.parse(text) as Frame;
      } catch {
        return out(`${stamp()} ? ${text}`);
      }
      for (const line of describeFrame(kind, frame, names)) out(`${stamp()} ${line}`);
      if (frame.event === 'init' && kind === 'client' && !askedFlows) {
        askedFlows = true;
        for (const id of args.flows) createFlow(id);
      }
    });
    ws.on('close', (code, reasonBuf) =>
      settle(() => {
        const reason = reasonBuf.toString();
        if (stopping) return finish(0);
        const final = FINAL_CLOSES.get(code);
        status(`closed ${code} ${reason || final || ''}`.trimEnd());
        if (final || !args.reconnect) return finish(final ? 1 : 0);
        retry();
      }),
    );
    ws.on('error', (err) => {
      if ((err as NodeJS.ErrnoException).code === 'ECONNREFUSED') status(`cannot reach ${url} (is \`npm start\` running?)`);
      else if (!settled) status(`error: ${err.message}`);
    });
  };
  const retry = () => {
    if (stopping) return finish(0);
    const delay = Math.min(10_000, 250 * 2 ** attempt++);
    status(`reconnecting in ${delay} ms`);
    setTimeout(connect, delay);
  };
  connect();
  return await done;
}

export function main(kind: DeviceKind): void {
  runDevice(kind, process.argv.slice(2))
    .then((code) => process.exit(code))
    .catch((err: unknown) => {
      if (err instanceof UsageError) {
        process.stderr.write(`npm run ${kind}: ${err.message}\n`);
        process.exit(2);
      }
      process.stderr.write(`npm run ${kind}: ${errorMessage(err)}\n`);
      process.exit(1);
    });
}
