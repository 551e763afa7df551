import { createServer, type IncomingMessage, type Server } from 'node:http';
import type { AddressInfo } from 'node:net';
import type { Change } from '../../src/change.ts';
import { SIGNATURE_HEADER, verifySignature } from '../../src/signature.ts';

export interface Received {
  accountId: string;
  changes: Change[];
}

/** What the sink answers to the next request: a status (possibly later), or `hang` (never answer). */
export type SinkBehaviour = (request: { accountId: string; changes: Change[]; count: number }) => number | 'hang' | Promise<number>;

/**
 * A stand-in for the Worker's changes endpoint: checks the signature like the Worker does and
 * records every accepted batch, in arrival order.
 */
export class RecordingSink {
  readonly accepted: Received[] = [];
  readonly refused: Array<{ accountId: string; status: number | 'hang'; changes: Change[] }> = [];
  requests = 0;
  behaviour: SinkBehaviour = () => 200;
  /** Keep accepted batches in `accepted`; a test of a million changes checks them in `onAccepted` instead. */
  record = true;
  onAccepted: (batch: Received) => void = () => {};
  private server!: Server;
  private hanging = new Set<() => void>();

  constructor(readonly secret: string) {}

  get url(): string {
    return `http://127.0.0.1:${(this.server.address() as AddressInfo).port}`;
  }

  /** Every accepted change, flattened in arrival order. */
  get changes(): Array<Change & { accountId: string }> {
    return this.accepted.flatMap((r) => r.changes.map((c) => ({ ...c, accountId: r.accountId })));
  }

  async start(port = 0): Promise<this> {
    this.server = createServer((req, res) => {
      void this.handle(req).then(
        (status) => {
          if (status === 'hang') {
            this.hanging.add(() => res.destroy());
            return;
          }
          res.writeHead(status, { 'content-type': 'application/json' }).end(JSON.stringify(status === 200 ? { applied: 0, skipped: 0 } : { error: 'refused' }));
        },
        (err: unknown) => res.writeHead(500).end(String(err)),
      );
    });
    this.server.keepAliveTimeout = 60_000;
    await new Promise<void>((resolve) => this.server.listen(port, '127.0.0.1', resolve));
    return this;
  }

  async stop(): Promise<void> {
    for (const h of this.hanging) h();
    this.server.closeAllConnections();
    await new Promise<void>((resolve) => this.server.close(() => resolve()));
  }

  private async handle(req: IncomingMessage): Promise<number | 'hang'> {
    const chunks: Buffer[] = [];
    for await (const chunk of req) chunks.push(chunk as Buffer);
    const body = Buffer.concat(chunks).toString('utf8');
    const match = /^\/v1\/accounts\/([^/]+)\/changes$/.exec(req.url ?? '');
    if (req.method !== 'POST' || !match) return 404;
    const check = await verifySignature(this.secret, req.headers[SIGNATURE_HEADER] as string | undefined, body, Math.floor(Date.now() / 1000));
    if (check !== 'ok') return 401;
    const accountId = decodeURIComponent(match[1] as string);
    const changes = (JSON.parse(body) as { changes: Change[] }).changes;
    this.requests++;
    const status = await this.behaviour({ accountId, changes, count: this.requests });
    if (status === 200) {
      this.onAccepted({ accountId, changes });
      if (this.record) this.accepted.push({ accountId, changes });
    } else this.refused.push({ accountId, status, changes });
    return status;
  }
}
