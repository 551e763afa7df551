import WebSocket from 'ws';
import { deviceSocketUrl } from '../../dev/device-url.ts';

export interface Frame {
  event: string;
  ref?: string | number;
  payload: Record<string, unknown>;
}

export interface DeviceOptions {
  externalId?: string;
  name?: string;
  publicKey?: string;
  version?: string;
  /**
   * Send nothing, not even the `ping` a device sends as soon as it is connected (the dev CLIs do,
   * and devices' heartbeats). Local workerd keeps a socket that has carried no frame from the device
   * open after the object closes it, until the object is evicted (~10 s; docs/protocol.md#local-run).
   */
  silent?: boolean;
  /** Frames uncompressed (no permessage-deflate), for a test that reads them on the wire. */
  plain?: boolean;
}

export interface ResourceView {
  id: string;
  type: string;
  name: string;
  address: string | null;
  sites: { id: string; name: string }[];
  [key: string]: unknown;
}

export class ConnectRefused extends Error {
  override name = 'ConnectRefused';
  constructor(
    readonly status: number,
    readonly body: string,
  ) {
    super(`connect refused: HTTP ${status} ${body}`);
  }
}

let counter = 0;

/**
 * A device on the real Worker's WebSocket (docs/protocol.md#websocket-routes), as a test sees it: every frame in
 * order, the close code from the close frame, reconnection, and (for clients) the view that its
 * events add up to: init, resource_created_or_updated and resource_deleted replayed.
 */
export class Device {
  readonly frames: Frame[] = [];
  /** Resource id -> the last view sent; replaced on each init. */
  readonly view = new Map<string, ResourceView>();
  /** The socket's `close` event (the TCP connection ended), when it came (Date.now()). */
  closed: { code: number; reason: string; at: number } | undefined;
  /**
   * The server's close frame, when it arrived (Date.now()): what a device acts on. The local
   * Worker ends the TCP connection right after it (docs/protocol.md#local-run); `wrangler dev`'s proxy
   * took ~10 s.
   */
  closeFrame: { code: number; reason: string; at: number } | undefined;
  init: Frame | undefined;
  connections = 0;
  private ws: WebSocket | undefined;
  private read = 0;
  private waiters: Array<() => void> = [];
  readonly externalId: string;
  readonly publicKey: string;

  constructor(
    private readonly baseUrl: () => string,
    readonly kind: 'client' | 'gateway',
    readonly token: string,
    private readonly options: DeviceOptions = {},
  ) {
    this.externalId = options.externalId ?? `${kind}-${process.pid}-${++counter}`;
    this.publicKey = options.publicKey ?? `pk-${this.externalId}`;
  }

  get url(): string {
    return deviceSocketUrl(this.baseUrl(), this.kind, {
      token: this.token,
      externalId: this.externalId,
      name: this.options.name ?? this.externalId,
      publicKey: this.publicKey,
      version: this.options.version ?? '1.4.2',
    });
  }

  get id(): string {
    const p = this.init?.payload;
    return String(this.kind === 'client' ? p?.client_id : p?.gateway_id);
  }

  get open(): boolean {
    return this.ws?.readyState === WebSocket.OPEN && this.closed === undefined;
  }

  /** Opens a connection and waits for its init (the view restarts from it). */
  async connect(timeoutMs = 15_000): Promise<Frame> {
    this.closed = undefined;
    this.closeFrame = undefined;
    const before = this.frames.length;
    await new Promise<void>((resolve, reject) => {
      // ws's own close timeout (30 s) stays: a server that does not end the connection after the
      // close handshake shows as a late `close` event.
      const ws = new WebSocket(this.url, { handshakeTimeout: timeoutMs, ...(this.options.plain ? { perMessageDeflate: false } : {}) });
      this.ws = ws;
      ws.on('unexpected-response', (req, res) => {
        let body = '';
        res.on('data', (d: Buffer) => (body += d.toString()));
        res.on('end', () => {
          req.destroy();
          reject(new ConnectRefused(res.statusCode ?? 0, body));
        });
      });
      ws.on('open', () => {
        // A keepalive at once, as devices do; the runtime answers it without waking the object.
        if (!this.options.silent) ws.send('ping');
        // ws has no public event for a received close frame: its receiver's `conclude` is emitted
        // as the frame is parsed (the same event ws itself answers the close handshake on).
        const receiver = (ws as unknown as { _receiver?: { on(event: 'conclude', fn: (code: number, reason: Buffer) => void): void } })._receiver;
        if (!receiver) {
          reject(new Error('ws internals changed: no receiver to hear close frames on'));
          return;
        }
        receiver.on('conclude', (code, reason) => {
          if (this.ws === ws) this.closeFrame = { code, reason: reason.toString(), at: Date.now() };
          this.wake();
        });
        this.connections++;
        resolve();
      });
      ws.on('error', (err) => reject(err));
      ws.on('message', (data) => {
        const text = data.toString();
        if (text === 'pong') return;
        const frame = JSON.parse(text) as Frame;
        this.frames.push(frame);
        this.replay(frame);
        this.wake();
      });
      ws.on('close', (code, reason) => {
        if (this.ws === ws) this.closed = { code, reason: reason.toString(), at: Date.now() };
        this.wake();
      });
    });
    await this.until(() => this.frames.slice(before).some((f) => f.event === 'init'), 'init', timeoutMs);
    return this.init!;
  }

  /** Connects, retrying while the Worker is unreachable or answers 5xx (it is restarting). */
  async reconnect(timeoutMs = 60_000): Promise<Frame> {
    const deadline = Date.now() + timeoutMs;
    for (;;) {
      try {
        return await this.connect(Math.max(1000, Math.min(15_000, deadline - Date.now())));
      } catch (err) {
        if (err instanceof ConnectRefused && err.status < 500) throw err;
        if (Date.now() > deadline) throw err;
        await new Promise((r) => setTimeout(r, 250));
      }
    }
  }

  private replay(frame: Frame): void {
    if (frame.event === 'init') {
      this.init = frame;
      this.view.clear();
      for (const r of (frame.payload.resources as ResourceView[] | undefined) ?? []) this.view.set(r.id, r);
    } else if (frame.event === 'resource_created_or_updated') {
      const r = frame.payload as unknown as ResourceView;
      this.view.set(r.id, r);
    } else if (frame.event === 'resource_deleted') {
      this.view.delete(String(frame.payload.id));
    }
  }

  private wake(): void {
    for (const w of this.waiters.splice(0)) w();
  }

  async until(test: () => boolean, what: string, timeoutMs = 15_000): Promise<void> {
    const deadline = Date.now() + timeoutMs;
    while (!test()) {
      const left = deadline - Date.now();
      if (left <= 0) {
        throw new Error(
          `${this.kind} ${this.externalId}: timed out after ${timeoutMs} ms waiting for ${what}; last frames: ${JSON.stringify(this.frames.slice(-5)).slice(0, 2000)}; closed: ${JSON.stringify(this.closed)}`,
        );
      }
      await new Promise<void>((resolve) => {
        const t = setTimeout(resolve, Math.min(left, 250));
        this.waiters.push(() => {
          clearTimeout(t);
          resolve();
        });
      });
    }
  }

  /** The next frame not read yet that matches (frames before it are skipped). */
  async next(match: string | ((f: Frame) => boolean), timeoutMs = 15_000): Promise<Frame> {
    const test = typeof match === 'string' ? (f: Frame) => f.event === match : match;
    let found: Frame | undefined;
    await this.until(
      () => {
        for (let i = this.read; i < this.frames.length; i++) {
          if (test(this.frames[i]!)) {
            found = this.frames[i];
            this.read = i + 1;
            return true;
          }
        }
        return false;
      },
      typeof match === 'string' ? match : 'a matching frame',
      timeoutMs,
    );
    return found!;
  }

  /** Marks every frame so far as read. */
  skip(): void {
    this.read = this.frames.length;
  }

  /** Frames that arrived after the last read one, waiting `ms` first. */
  async quiet(ms: number): Promise<Frame[]> {
    await new Promise((r) => setTimeout(r, ms));
    const out = this.frames.slice(this.read);
    this.read = this.frames.length;
    return out;
  }

  /** The server's close frame, as soon as it arrives (not the TCP close after it). */
  async waitCloseFrame(timeoutMs: number): Promise<{ code: number; reason: string; at: number }> {
    await this.until(() => this.closeFrame !== undefined, 'a close frame', timeoutMs);
    return this.closeFrame!;
  }

  async waitClosed(timeoutMs = 15_000): Promise<{ code: number; reason: string; at: number }> {
    await this.until(() => this.closed !== undefined, 'the socket to close', timeoutMs);
    return this.closed!;
  }

  send(frame: unknown): void {
    this.ws?.send(typeof frame === 'string' ? frame : JSON.stringify(frame));
  }

  close(): void {
    this.ws?.close(1000, 'bye');
  }

  /** Drops the TCP connection without a close handshake. */
  terminate(): void {
    this.ws?.terminate();
  }
}
