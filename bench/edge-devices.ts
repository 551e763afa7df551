/**
 * Device ends of the edge's WebSockets for the benchmark (the `ws` package): many sockets, each
 * recording the raw text and arrival time of every frame, and waits that resolve when frames
 * reach a set of sockets. Frames are parsed only after the clock stops.
 */
import { performance } from 'node:perf_hooks';
import WebSocket from 'ws';
import { deviceSocketUrl, type DeviceKind } from '../dev/device-url.ts';

export interface Frame {
  event: string;
  payload: Record<string, unknown>;
  ref?: string | number;
}

type Listener = (device: Device, text: string, at: number) => void;

export class Device {
  readonly texts: string[] = [];
  readonly times: number[] = [];
  closed: { code: number; reason: string } | undefined;
  listener: Listener | undefined;

  constructor(
    readonly ws: WebSocket,
    readonly name: string,
  ) {
    ws.on('message', (data, isBinary) => {
      const at = performance.now();
      const text = isBinary ? '' : data.toString();
      this.texts.push(text);
      this.times.push(at);
      this.listener?.(this, text, at);
    });
    ws.on('close', (code, reason) => (this.closed = { code, reason: reason.toString() }));
  }

  /** Parsed frames from index `from` on (pongs left out). */
  frames(from = 0): Frame[] {
    return this.texts
      .slice(from)
      .filter((t) => t !== 'pong')
      .map((t) => JSON.parse(t) as Frame);
  }

  send(frame: unknown): void {
    this.ws.send(typeof frame === 'string' ? frame : JSON.stringify(frame));
  }

  close(): void {
    this.ws.terminate();
  }
}

export interface ConnectOptions {
  externalId: string;
  version?: string;
}

export function websocketUrl(base: string, kind: DeviceKind, token: string, o: ConnectOptions): string {
  return deviceSocketUrl(base, kind, { token, externalId: o.externalId, name: `bench ${o.externalId}`, publicKey: `pk-${o.externalId}`, version: o.version ?? '1.4.2' });
}

class ConnectError extends Error {
  override name = 'ConnectError';
  constructor(
    message: string,
    readonly retryable: boolean,
  ) {
    super(message);
  }
}

/** Opens one socket and resolves once its `init` arrived. */
function connectOnce(url: string, name: string, timeoutMs: number): Promise<Device> {
  return new Promise((resolve, reject) => {
    const ws = new WebSocket(url, { perMessageDeflate: false, handshakeTimeout: timeoutMs });
    const device = new Device(ws, name);
    const timer = setTimeout(() => {
      ws.terminate();
      reject(new ConnectError(`${name}: no init within ${timeoutMs} ms`, true));
    }, timeoutMs);
    device.listener = (_d, text) => {
      if (!text.startsWith('{"event":"init"')) return;
      clearTimeout(timer);
      device.listener = undefined;
      resolve(device);
    };
    ws.on('unexpected-response', (_req, res) => {
      let body = '';
      res.on('data', (c: Buffer) => (body += c.toString()));
      res.on('end', () => {
        clearTimeout(timer);
        reject(new ConnectError(`${name}: HTTP ${res.statusCode} ${body.slice(0, 300)}`, (res.statusCode ?? 0) >= 500));
      });
    });
    ws.on('error', (err) => {
      clearTimeout(timer);
      reject(new ConnectError(`${name}: ${err.message}`, true));
    });
  });
}

export interface ConnectStats {
  ms: number;
  retries: number;
}

/**
 * Connects every URL with at most `concurrency` handshakes in flight (waves), retrying failures
 * the server calls transient (5xx, resets) with a short backoff.
 */
export async function connectMany(
  urls: readonly string[],
  opts: { concurrency: number; timeoutMs?: number; progress?: (done: number) => void },
): Promise<{ devices: Device[]; stats: ConnectStats }> {
  const started = performance.now();
  const devices = new Array<Device>(urls.length);
  let next = 0;
  let done = 0;
  let retries = 0;
  const worker = async () => {
    for (;;) {
      const i = next++;
      if (i >= urls.length) return;
      for (let attempt = 0; ; attempt++) {
        try {
          devices[i] = await connectOnce(urls[i]!, `device ${i}`, opts.timeoutMs ?? 60_000);
          break;
        } catch (err) {
          if (!(err instanceof ConnectError) || !err.retryable || attempt >= 8) throw err;
          retries++;
          await new Promise((r) => setTimeout(r, 100 * 2 ** attempt));
        }
      }
      if (++done % 1000 === 0) opts.progress?.(done);
    }
  };
  await Promise.all(Array.from({ length: Math.min(opts.concurrency, urls.length) }, worker));
  return { devices, stats: { ms: performance.now() - started, retries } };
}

/**
 * Resolves with each device's arrival time of the first frame that `match`es after the call (in
 * the devices' order), once every device has one, or rejects after `timeoutMs`.
 */
export function firstFrames(devices: readonly Device[], match: (text: string) => boolean, timeoutMs = 60_000): Promise<number[]> {
  return new Promise((resolve, reject) => {
    const times = new Array<number>(devices.length).fill(NaN);
    const index = new Map(devices.map((d, i) => [d, i]));
    let left = devices.length;
    const stop = () => {
      clearTimeout(timer);
      for (const d of devices) d.listener = undefined;
    };
    const timer = setTimeout(() => {
      stop();
      reject(new Error(`${left} of ${devices.length} sockets got no matching frame within ${timeoutMs} ms`));
    }, timeoutMs);
    const listener: Listener = (d, text, at) => {
      const i = index.get(d)!;
      if (!Number.isNaN(times[i]!) || !match(text)) return;
      times[i] = at;
      if (--left === 0) {
        stop();
        resolve(times);
      }
    };
    for (const d of devices) d.listener = listener;
    if (devices.length === 0) {
      stop();
      resolve(times);
    }
  });
}

/** Resolves with the arrival times of the first `total` matching frames across the devices. */
export function countFrames(devices: readonly Device[], match: (text: string) => boolean, total: number, timeoutMs = 60_000): Promise<number[]> {
  return new Promise((resolve, reject) => {
    const times: number[] = [];
    const stop = () => {
      clearTimeout(timer);
      for (const d of devices) d.listener = undefined;
    };
    const timer = setTimeout(() => {
      stop();
      reject(new Error(`${times.length} of ${total} matching frames within ${timeoutMs} ms`));
    }, timeoutMs);
    const listener: Listener = (_d, text, at) => {
      if (!match(text)) return;
      times.push(at);
      if (times.length === total) {
        stop();
        resolve(times);
      }
    };
    for (const d of devices) d.listener = listener;
  });
}
