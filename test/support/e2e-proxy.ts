import { createConnection, createServer, type Server, type Socket } from 'node:net';
import type { AddressInfo } from 'node:net';

const SWALLOWED_KEPT = 65_536;

/**
 * A TCP proxy between devices and the Worker that can swallow what the Worker sends: the bytes
 * leave the Worker and never reach the device, as if the object had crashed before its sends
 * went out.
 */
export class SwallowingProxy {
  private server!: Server;
  private readonly links = new Set<{ device: Socket; worker: Socket }>();
  swallowing = false;
  /** What was swallowed, as text (server frames are unmasked), its last SWALLOWED_KEPT characters. */
  swallowed = '';

  constructor(private readonly targetPort: () => number) {}

  get url(): string {
    return `http://127.0.0.1:${(this.server.address() as AddressInfo).port}`;
  }

  async start(): Promise<this> {
    this.server = createServer((device) => {
      const worker = createConnection({ port: this.targetPort(), host: '127.0.0.1' });
      const link = { device, worker };
      this.links.add(link);
      const close = () => {
        this.links.delete(link);
        device.destroy();
        worker.destroy();
      };
      device.on('error', close).on('close', close);
      worker.on('error', close).on('close', close);
      device.on('data', (chunk: Buffer) => worker.write(chunk));
      worker.on('data', (chunk: Buffer) => {
        if (this.swallowing) this.swallowed = (this.swallowed + chunk.toString('latin1')).slice(-SWALLOWED_KEPT);
        else device.write(chunk);
      });
    });
    await new Promise<void>((resolve) => this.server.listen(0, '127.0.0.1', resolve));
    return this;
  }

  /** Cuts every connection (the devices see an abnormal close). */
  dropAll(): void {
    for (const l of this.links) {
      l.device.destroy();
      l.worker.destroy();
    }
    this.links.clear();
  }

  async close(): Promise<void> {
    this.dropAll();
    await new Promise<void>((resolve) => this.server.close(() => resolve()));
  }
}
