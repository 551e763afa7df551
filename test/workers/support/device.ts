import { SELF } from 'cloudflare:test';
import { app } from '../../../workers/index.ts';
import { BASE, randomText } from './world.ts';

export interface Frame {
  event: string;
  payload: Record<string, unknown> & { [k: string]: unknown };
  ref?: string | number;
}

export interface ConnectOptions {
  externalId?: string;
  name?: string;
  publicKey?: string;
  version?: string;
  ip?: string;
  country?: string;
  /** The request's continent as the platform tells the Worker (`request.cf.continent`): where relays are placed. */
  continent?: string;
  /** More request headers (e.g. forged ones). */
  headers?: Record<string, string>;
  /**
   * Connect through the Worker's own fetch in this isolate (`app.request`) with these bindings:
   * for a Worker configured otherwise (production mode, other limits), or many connects in a row
   * (SELF's test wrapper slows down with each request).
   */
  bindings?: Env;
}

/** A device's end of a WebSocket: collects frames and the close, and waits for them. */
export class Device {
  readonly frames: Frame[] = [];
  readonly texts: string[] = [];
  closed: { code: number; reason: string } | undefined;
  /** When the close frame arrived (Date.now()). */
  closedAt: number | undefined;
  private waiters: Array<() => void> = [];
  private read = 0;

  constructor(
    readonly ws: WebSocket,
    readonly externalId: string,
  ) {
    ws.addEventListener('message', (e) => {
      const text = typeof e.data === 'string' ? e.data : '';
      this.texts.push(text);
      if (text !== 'pong') this.frames.push(JSON.parse(text) as Frame);
      this.wake();
    });
    ws.addEventListener('close', (e) => {
      this.closedAt = Date.now();
      this.closed = { code: e.code, reason: e.reason };
      this.wake();
    });
  }

  private wake(): void {
    for (const w of this.waiters.splice(0)) w();
  }

  /** Waits until `test` holds, re-checked on every frame and on the close; fails after `ms`. */
  async waitFor(test: () => boolean, what: string, ms = 5000): Promise<void> {
    await this.until(test, what, ms);
  }

  private async until(test: () => boolean, what: string, ms: number): Promise<void> {
    const deadline = Date.now() + ms;
    while (!test()) {
      const left = deadline - Date.now();
      if (left <= 0) throw new Error(`timed out waiting for ${what}; unread frames: ${JSON.stringify(this.frames.slice(this.read))}`);
      await new Promise<void>((resolve) => {
        const t = setTimeout(resolve, left);
        this.waiters.push(() => {
          clearTimeout(t);
          resolve();
        });
      });
    }
  }

  /** The next unread frame (optionally of one event). */
  async next(event?: string, ms = 5000): Promise<Frame> {
    await this.until(() => this.frames.length > this.read, event ?? 'a frame', ms);
    const f = this.frames[this.read++]!;
    if (event && f.event !== event) throw new Error(`expected ${event}, got ${JSON.stringify(f)}`);
    return f;
  }

  /**
   * Every unread frame the object sent so far (after waiting `ms` for frames it sends on its own,
   * from an alarm). A `ping` is the barrier: the runtime answers it `pong` on the same socket,
   * after every frame the object sent before it, so nothing depends on timing.
   */
  async drain(ms = 0): Promise<Frame[]> {
    if (ms > 0) await new Promise((r) => setTimeout(r, ms));
    if (this.closed === undefined) {
      const pongs = this.texts.filter((t) => t === 'pong').length;
      this.ws.send('ping');
      await this.until(() => this.closed !== undefined || this.texts.filter((t) => t === 'pong').length > pongs, 'pong', 10_000);
    }
    const out = this.frames.slice(this.read);
    this.read = this.frames.length;
    return out;
  }

  async waitClosed(ms = 5000): Promise<{ code: number; reason: string }> {
    await this.until(() => this.closed !== undefined, 'close', ms);
    return this.closed!;
  }

  send(frame: unknown): void {
    this.ws.send(typeof frame === 'string' ? frame : JSON.stringify(frame));
  }

  close(): void {
    this.ws.close(1000, 'bye');
  }
}

export function websocketUrl(kind: 'client' | 'gateway', token: string, opts: ConnectOptions = {}): string {
  const q = new URLSearchParams({
    token,
    external_id: opts.externalId ?? randomText(12),
    name: opts.name ?? 'device',
    public_key: opts.publicKey ?? `pk-${randomText(8)}`,
    version: opts.version ?? '1.4.2',
  });
  return `${BASE}/v1/${kind}/websocket?${q}`;
}

export async function tryConnect(kind: 'client' | 'gateway', token: string, opts: ConnectOptions = {}): Promise<Response> {
  const headers: Record<string, string> = { upgrade: 'websocket', ...opts.headers };
  if (opts.ip) headers['cf-connecting-ip'] = opts.ip;
  const init = { headers, cf: { country: opts.country ?? 'XX', ...(opts.continent ? { continent: opts.continent } : {}) } } as RequestInit;
  const url = websocketUrl(kind, token, opts);
  return opts.bindings ? await app.request(url, init, opts.bindings) : await SELF.fetch(url, init);
}

/** Connects and returns the device with its `init` frame read. */
export async function connect(kind: 'client' | 'gateway', token: string, opts: ConnectOptions = {}): Promise<{ device: Device; init: Frame }> {
  const res = await tryConnect(kind, token, opts);
  if (res.status !== 101 || !res.webSocket) throw new Error(`connect: ${res.status} ${await res.text()}`);
  res.webSocket.accept();
  const device = new Device(res.webSocket, opts.externalId ?? '');
  const init = await device.next('init');
  return { device, init };
}
