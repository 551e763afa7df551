import { createServer, type IncomingMessage, type Server } from 'node:http';
import type { AddressInfo } from 'node:net';
import type { Change } from '../../src/change.ts';
import { SIGNATURE_HEADER, verifySignature } from '../../src/signature.ts';

export interface Received {
  accountId: string;
  changes: Change[];
  /** The batch's `epoch`, null when it carried none. */
  epoch: string | null;
}

/** Which route a request went to: a batch of changes, or a re-hydration (docs/protocol.md#rehydrate-route). */
export type SinkRoute = 'changes' | 'rehydrate';

/** One well-signed request, in arrival order, with what the sink answered. */
export interface SinkRequest {
  route: SinkRoute;
  accountId: string;
  epoch: string | null;
  /** Empty for a rehydrate. */
  changes: Change[];
  /** `hang` also while the answer is pending. */
  status: number | 'hang';
  /** When it arrived (Date.now()). */
  at: number;
}

/** What the sink answers to the next request: a status (possibly later), or `hang` (never answer). */
export type SinkBehaviour = (request: { route: SinkRoute; accountId: string; epoch: string | null; changes: Change[]; count: number }) => number | 'hang' | Promise<number>;

/**
 * A stand-in for the Worker's changes and rehydrate endpoints: checks the signature like the Worker
 * does and records every request, in arrival order (`log`), the accepted batches (`accepted`) and
 * the accepted re-hydrations (`rehydrates`).
 */
export class RecordingSink {
  readonly accepted: Received[] = [];
  readonly refused: Array<{ accountId: string; status: number | 'hang'; changes: Change[] }> = [];
  readonly rehydrates: Array<{ accountId: string; epoch: string | null; at: number }> = [];
  readonly log: SinkRequest[] = [];
  requests = 0;
  /** Changes accepted so far, replays included. */
  acceptedChanges = 0;
  private readonly byAccount = new Map<string, Array<Change & { accountId: string; epoch: string | null }>>();
  behaviour: SinkBehaviour = () => 200;
  /**
   * Keep accepted batches (`accepted`, `changesOf`) and the changes of each request (`log`); a test
   * of a million changes checks them in `onAccepted` instead.
   */
  record = true;
  onAccepted: (batch: Received) => void = () => {};
  private server!: Server;
  private hanging = new Set<() => void>();

  constructor(readonly secret: string) {}

  get url(): string {
    return `http://127.0.0.1:${(this.server.address() as AddressInfo).port}`;
  }

  /** Every accepted change, flattened in arrival order, with the epoch of its batch. */
  get changes(): Array<Change & { accountId: string; epoch: string | null }> {
    return this.accepted.flatMap((r) => r.changes.map((c) => ({ ...c, accountId: r.accountId, epoch: r.epoch })));
  }

  /** One account's accepted changes in arrival order, kept as they come (cheap to poll). */
  changesOf(accountId: string): ReadonlyArray<Change & { accountId: string; epoch: string | null }> {
    return this.byAccount.get(accountId) ?? [];
  }

  /** The requests of one account, in arrival order. */
  requestsOf(accountId: string): SinkRequest[] {
    return this.log.filter((r) => r.accountId === accountId);
  }

  async start(port = 0): Promise<this> {
    this.server = createServer((req, res) => {
      void this.handle(req).then(
        ({ status, route }) => {
          if (status === 'hang') {
            this.hanging.add(() => res.destroy());
            return;
          }
          const ok = route === 'rehydrate' ? { rehydrated: true, position: null } : { applied: 0, skipped: 0 };
          res.writeHead(status, { 'content-type': 'application/json' }).end(JSON.stringify(status === 200 ? ok : { error: 'refused' }));
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

  private async handle(req: IncomingMessage): Promise<{ status: number | 'hang'; route?: SinkRoute }> {
    const at = Date.now();
    const chunks: Buffer[] = [];
    for await (const chunk of req) chunks.push(chunk as Buffer);
    const body = Buffer.concat(chunks).toString('utf8');
    const match = /^\/v1\/accounts\/([^/]+)\/(changes|rehydrate)$/.exec(req.url ?? '');
    if (req.method !== 'POST' || !match) return { status: 404 };
    const check = await verifySignature(this.secret, req.headers[SIGNATURE_HEADER] as string | undefined, body, Math.floor(Date.now() / 1000));
    if (check !== 'ok') return { status: 401 };
    const accountId = decodeURIComponent(match[1] as string);
    const route = match[2] as SinkRoute;
    const parsed = (body.trim() === '' ? {} : JSON.parse(body)) as { changes?: Change[]; epoch?: string };
    const changes = route === 'changes' ? (parsed.changes ?? []) : [];
    const epoch = parsed.epoch ?? null;
    this.requests++;
    // Logged on arrival (in arrival order); the answer is filled in when the behaviour gives it.
    const entry: SinkRequest = { route, accountId, epoch, changes: this.record ? changes : [], status: 'hang', at };
    this.log.push(entry);
    const status = await this.behaviour({ route, accountId, epoch, changes, count: this.requests });
    entry.status = status;
    if (route === 'rehydrate') {
      if (status === 200) this.rehydrates.push({ accountId, epoch, at });
    } else if (status === 200) {
      this.acceptedChanges += changes.length;
      this.onAccepted({ accountId, changes, epoch });
      if (this.record) {
        this.accepted.push({ accountId, changes, epoch });
        let list = this.byAccount.get(accountId);
        if (!list) this.byAccount.set(accountId, (list = []));
        for (const c of changes) list.push({ ...c, accountId, epoch });
      }
    } else this.refused.push({ accountId, status, changes });
    return { status, route };
  }
}
