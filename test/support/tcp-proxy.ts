import { createConnection, createServer, type Server, type Socket } from 'node:net';
import type { AddressInfo } from 'node:net';

interface Link {
  client: Socket;
  server: Socket;
  frozen: boolean;
}

/**
 * A TCP proxy in front of Postgres that can play a half-open connection (stop forwarding without
 * closing) and tamper with the pgoutput payload of XLogData frames on their way to the client.
 */
export class TcpProxy {
  private readonly links = new Set<Link>();
  private server!: Server;
  /** Called with each XLogData payload (pgoutput message); returns true once it has tampered with one. */
  tamper: ((payload: Buffer) => boolean) | undefined;
  tampered = 0;

  constructor(private readonly targetPort: number) {}

  get port(): number {
    return (this.server.address() as AddressInfo).port;
  }

  async start(): Promise<this> {
    this.server = createServer((client) => {
      const server = createConnection({ port: this.targetPort, host: '127.0.0.1' });
      const link: Link = { client, server, frozen: false };
      this.links.add(link);
      const close = () => {
        this.links.delete(link);
        client.destroy();
        server.destroy();
      };
      client.on('error', close).on('close', close);
      server.on('error', close).on('close', close);
      client.on('data', (chunk) => {
        if (!link.frozen) server.write(chunk);
      });
      let pending: Buffer = Buffer.alloc(0);
      server.on('data', (chunk: Buffer) => {
        if (link.frozen) return;
        pending = pending.length === 0 ? chunk : Buffer.concat([pending, chunk]);
        // Backend messages: type byte, int32 length (including itself), body.
        let offset = 0;
        while (pending.length - offset >= 5) {
          const length = pending.readUInt32BE(offset + 1);
          if (pending.length - offset < 1 + length) break;
          const message = pending.subarray(offset, offset + 1 + length);
          if (message[0] === 0x64 && message[5] === 0x77 && this.tamper?.(message.subarray(5 + 25))) {
            this.tamper = undefined;
            this.tampered++;
          }
          offset += 1 + length;
        }
        if (offset > 0) client.write(pending.subarray(0, offset));
        pending = pending.subarray(offset);
      });
    });
    await new Promise<void>((resolve) => this.server.listen(0, '127.0.0.1', resolve));
    return this;
  }

  /** Existing connections stop forwarding in both directions and stay open: a half-open link. */
  freezeExisting(): number {
    for (const link of this.links) link.frozen = true;
    return this.links.size;
  }

  async close(): Promise<void> {
    for (const link of this.links) {
      link.client.destroy();
      link.server.destroy();
    }
    await new Promise<void>((resolve) => this.server.close(() => resolve()));
  }
}
