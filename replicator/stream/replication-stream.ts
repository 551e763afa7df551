import type { Duplex } from 'node:stream';
import postgres, { type Sql } from 'postgres';
import type { Lsn } from '../../src/lsn.ts';
import { withNoDelay } from '../pg-socket.ts';
import { postgresTimeFromUnixMs } from '../pg-time.ts';

export interface FrameHandlers {
  /** An XLogData frame; the pgoutput message starts at byte 25. */
  onXLogData(frame: Buffer): void;
  onKeepalive(walEnd: Lsn, replyRequested: boolean): void;
  /** The stream ended or failed; called once. */
  onEnd(err: Error | undefined): void;
}

export function statusUpdate(lsn: Lsn, replyRequested: boolean, nowMs: number): Buffer {
  const buf = Buffer.alloc(34);
  buf[0] = 0x72; // 'r'
  buf.writeBigUInt64BE(lsn, 1); // written
  buf.writeBigUInt64BE(lsn, 9); // flushed
  buf.writeBigUInt64BE(lsn, 17); // applied
  buf.writeBigInt64BE(postgresTimeFromUnixMs(nowMs), 25);
  buf[33] = replyRequested ? 1 : 0;
  return buf;
}

/** A replication connection (postgres.js, `replication: 'database'`) and its CopyBoth stream. */
export class ReplicationStream {
  private ended = false;

  private constructor(
    readonly sql: Sql,
    private readonly stream: Duplex,
    private readonly handlers: FrameHandlers,
  ) {
    stream.on('data', (frame: Buffer) => {
      const type = frame[0];
      if (type === 0x77) handlers.onXLogData(frame);
      else if (type === 0x6b && frame.length >= 18) handlers.onKeepalive(frame.readBigUInt64BE(1), frame[17] === 1);
    });
    stream.on('error', (err: Error) => this.end(err));
    stream.on('close', () => this.end(undefined));
  }

  /** Opens the replication connection; the caller runs commands (slot creation) on `sql`, then `start`s. */
  static connect(url: string, onClose: () => void): Sql {
    return postgres(
      url,
      withNoDelay({
        max: 1,
        fetch_types: false,
        idle_timeout: 0,
        max_lifetime: null,
        onnotice: () => {},
        onclose: onClose,
        connection: {
          replication: 'database',
          application_name: 'edgeplane-replicator',
          // Timestamps come as `...+00`: the decoder's fast path.
          TimeZone: 'UTC',
          DateStyle: 'ISO, MDY',
          extra_float_digits: '3',
        },
      }),
    );
  }

  static async start(sql: Sql, command: string, handlers: FrameHandlers): Promise<ReplicationStream> {
    const stream = (await sql.unsafe(command).writable()) as unknown as Duplex;
    return new ReplicationStream(sql, stream, handlers);
  }

  sendStatus(lsn: Lsn, replyRequested = false): void {
    if (!this.ended) this.stream.write(statusUpdate(lsn, replyRequested, Date.now()));
  }

  pause(): void {
    this.stream.pause();
  }

  resume(): void {
    this.stream.resume();
  }

  /** Ends replication politely (CopyDone), then the connection. */
  async close(): Promise<void> {
    if (!this.ended) {
      await new Promise<void>((resolve) => {
        const timer = setTimeout(resolve, 2000);
        this.stream.once('close', () => {
          clearTimeout(timer);
          resolve();
        });
        this.stream.end();
      });
    }
    await this.sql.end({ timeout: 2 });
    this.end(undefined);
  }

  /** Tears the connection down without a goodbye (a stalled or half-open socket). */
  destroy(err: Error): void {
    this.end(err);
    this.stream.destroy();
    void this.sql.end({ timeout: 0 });
  }

  private end(err: Error | undefined): void {
    if (this.ended) return;
    this.ended = true;
    this.handlers.onEnd(err);
  }
}
