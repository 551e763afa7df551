import { connect } from 'cloudflare:sockets';
import { Buffer } from 'node:buffer';
import { EventEmitter } from 'node:events';

/**
 * A `cloudflare:sockets` TCP connection shaped like the net.Socket that postgres.js drives,
 * passed as its `socket` option. Written here because postgres.js's own Workers polyfill leaves an
 * unhandled "Stream was cancelled." rejection every time it closes a connection: its read loop
 * emits 'error' after the connection removed every listener (porsager/postgres#1202). This one
 * reports a failure once, and only to listeners that are still there.
 */
class PgSocket extends EventEmitter {
  readyState: 'open' | 'closed' = 'open';
  private readonly writer: WritableStreamDefaultWriter<Uint8Array>;
  private readonly reader: ReadableStreamDefaultReader<Uint8Array>;

  constructor(
    private readonly raw: Socket,
    private readonly heard: () => void,
  ) {
    super();
    this.writer = raw.writable.getWriter();
    this.reader = raw.readable.getReader();
    void this.read();
    raw.closed.then(
      () => this.finish(),
      (err: unknown) => this.finish(err),
    );
  }

  private async read(): Promise<void> {
    try {
      for (;;) {
        const { done, value } = await this.reader.read();
        if (done) break;
        this.heard();
        this.emit('data', Buffer.from(value));
      }
      this.finish();
    } catch (err) {
      this.finish(err);
    }
  }

  private finish(err?: unknown): void {
    if (this.readyState === 'closed') return;
    this.readyState = 'closed';
    if (err !== undefined && this.listenerCount('error') > 0) this.emit('error', err);
    this.emit('close', err !== undefined);
  }

  write(data: Uint8Array, callback?: () => void): boolean {
    this.heard();
    this.writer.write(data).then(
      () => callback?.(),
      (err: unknown) => this.finish(err),
    );
    return true;
  }

  end(data?: Uint8Array): void {
    if (data) this.write(data, () => this.close());
    else this.close();
  }

  destroy(): void {
    this.close();
    this.finish();
  }

  private close(): void {
    this.raw.close().catch(() => {});
  }
}

/**
 * postgres.js's `socket` option: a connected socket to the first host (Hyperdrive gives one).
 * `heard` runs whenever bytes cross it, either way: the caller's measure of a stalled operation.
 */
export function pgSocket(heard: () => void): (options: { host: string[]; port: number[] }) => Promise<PgSocket> {
  return async (options) => {
    const raw = connect({ hostname: options.host[0]!, port: options.port[0]! });
    await raw.opened;
    return new PgSocket(raw, heard);
  };
}
