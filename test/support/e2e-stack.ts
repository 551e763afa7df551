import { randomBytes } from 'node:crypto';
import { mkdtemp, rm } from 'node:fs/promises';
import { tmpdir } from 'node:os';
import path from 'node:path';
import { afterAll, beforeAll, beforeEach, inject } from 'vitest';
import type { Child } from '../../dev/child.ts';
import { freePort } from '../../dev/ports.ts';
import { startReplicatorProcess } from '../../dev/replicator-child.ts';
import { isWorkerNoise, startWorkerProcess, waitForHttp } from '../../dev/worker-process.ts';
import { errorMessage } from '../../src/errors.ts';
import { createTestDatabase, type TestDatabase } from './database.ts';
import { Device, type DeviceOptions } from './e2e-device.ts';

export interface StackOptions {
  /** Default: a fresh migrated database on the run's cluster. */
  db?: TestDatabase;
  /** Further replicator variables (replicator/config.ts). */
  replicatorEnv?: Record<string, string>;
  /** Starts the replicator some other way than `node --import tsx replicator/main.ts` (e.g. the image's bundle). */
  launchReplicator?: (env: Record<string, string>, onLine: (line: string) => void) => Child;
  /** Further Worker variables (`[vars]`). */
  workerVars?: Record<string, string>;
}

export interface LogEntry {
  at: number;
  source: 'worker' | 'replicator';
  line: string;
}

/**
 * The whole system for one test file: a database, the replicator as a child process and the local
 * Worker (dev/worker.ts on the Miniflare API, with the run's bundle and its storage in a folder of
 * its own that survives restarts), each started as `npm start` starts them, on free ports. Parts
 * can be killed and started again on the same ports.
 */
export class Stack {
  readonly logs: LogEntry[] = [];
  /** Every device handed out, dropped on close: a test that failed midway leaves no socket behind. */
  private readonly devices: Device[] = [];
  replicator: Child | undefined;
  worker: Child | undefined;
  readonly secret = `e2e-${randomBytes(12).toString('hex')}`;

  private constructor(
    readonly db: TestDatabase,
    readonly workerPort: number,
    /** The Worker without Miniflare's entry worker, where the replicator sends (as `npm start` runs it). */
    readonly directPort: number,
    readonly replicatorPort: number,
    readonly persistDir: string,
    private readonly replicatorEnv: Record<string, string>,
    private readonly launchReplicator: StackOptions['launchReplicator'],
    private readonly workerVars: Record<string, string>,
  ) {}

  static async start(options: StackOptions = {}): Promise<Stack> {
    const db = options.db ?? (await createTestDatabase('e2e'));
    const stack = new Stack(
      db,
      await freePort(),
      await freePort(),
      await freePort(),
      await mkdtemp(path.join(tmpdir(), 'edgeplane-e2e-worker-')),
      {
        SLOT_NAME: db.name,
        LOG_LEVEL: 'info',
        // Quick retries, so that a Worker that comes back is found within half a second.
        RETRY_BASE_MS: '20',
        RETRY_MAX_MS: '500',
        FORWARD_TIMEOUT_MS: '3000',
        STATUS_INTERVAL_MS: '1000',
        ...options.replicatorEnv,
      },
      options.launchReplicator,
      {
        // The e2e-relays project: every device on a relay object of at most two sockets (docs/architecture.md#relays).
        ...(process.env.EDGEPLANE_E2E_RELAYS ? { RELAY_PLACEMENT: 'always', RELAY_MAX_SOCKETS: '2' } : {}),
        ...options.workerVars,
      },
    );
    try {
      // The slot first: an object must not hydrate from a snapshot older than the slot.
      await stack.startReplicator();
      await stack.startWorker();
    } catch (err) {
      await stack.close();
      throw err;
    }
    return stack;
  }

  get workerUrl(): string {
    return `http://127.0.0.1:${this.workerPort}`;
  }

  get directUrl(): string {
    return `http://127.0.0.1:${this.directPort}`;
  }

  get replicatorUrl(): string {
    return `http://127.0.0.1:${this.replicatorPort}`;
  }

  private record(source: LogEntry['source']) {
    return (line: string) => {
      if (source === 'worker' && isWorkerNoise(line)) return;
      this.logs.push({ at: Date.now(), source, line });
      if (this.logs.length > 20_000) this.logs.splice(0, 5_000);
    };
  }

  async startReplicator(waitReady = true): Promise<void> {
    if (this.replicator?.running) throw new Error('the replicator is already running');
    if (this.launchReplicator) {
      this.replicator = this.launchReplicator(
        {
          ...this.replicatorEnv,
          DATABASE_URL: this.db.url,
          EDGE_URL: this.directUrl,
          REPLICATOR_SECRET: this.secret,
          REPLICATOR_PORT: String(this.replicatorPort),
        },
        this.record('replicator'),
      );
    } else
      this.replicator = startReplicatorProcess({
        databaseUrl: this.db.url,
        edgeUrl: this.directUrl,
        secret: this.secret,
        port: this.replicatorPort,
        env: this.replicatorEnv,
        onLine: this.record('replicator'),
      });
    if (waitReady) await waitForHttp(`${this.replicatorUrl}/readyz`, this.replicator, 60_000, 'the replicator').catch((err: unknown) => this.fail(err));
  }

  async stopReplicator(signal: NodeJS.Signals = 'SIGKILL'): Promise<void> {
    await this.replicator?.stop(signal, 30_000);
  }

  async startWorker(): Promise<void> {
    if (this.worker?.running) throw new Error('the Worker is already running');
    this.worker = startWorkerProcess({
      port: this.workerPort,
      directPort: this.directPort,
      databaseUrl: this.db.url,
      secret: this.secret,
      persistTo: this.persistDir,
      bundle: inject('e2eWorkerBundle'),
      onLine: this.record('worker'),
      vars: this.workerVars,
    });
    await waitForHttp(`${this.workerUrl}/healthz`, this.worker, 90_000, 'the Worker').catch((err: unknown) => this.fail(err));
  }

  /** Stops the Worker and its workerd (SIGKILL: a crash; the objects' storage stays). */
  async stopWorker(signal: NodeJS.Signals = 'SIGKILL'): Promise<void> {
    await this.worker?.stop(signal, 10_000);
  }

  private fail(err: unknown): never {
    throw new Error(`${errorMessage(err)}\n--- last log lines ---\n${this.tail(40)}`);
  }

  tail(n = 40): string {
    return this.logs
      .slice(-n)
      .map((l) => `[${l.source}] ${l.line}`)
      .join('\n');
  }

  /** Waits for a log line (from index `from` on) that matches. */
  async waitForLog(source: LogEntry['source'], test: (line: string) => boolean, timeoutMs = 15_000, from = 0): Promise<LogEntry> {
    const deadline = Date.now() + timeoutMs;
    for (;;) {
      const found = this.logs.slice(from).find((l) => l.source === source && test(l.line));
      if (found) return found;
      if (Date.now() > deadline) throw new Error(`no ${source} log line matched within ${timeoutMs} ms; last lines:\n${this.tail(20)}`);
      await new Promise((r) => setTimeout(r, 25));
    }
  }

  /** The replicator's Prometheus metrics as name{labels} -> value. */
  async metrics(): Promise<Map<string, number>> {
    // A replicator that was just restarted may not listen yet; one that keeps refusing is a failure.
    let text: string | undefined;
    for (const deadline = Date.now() + 10_000; text === undefined; ) {
      try {
        text = await (await fetch(`${this.replicatorUrl}/metrics`)).text();
      } catch (err) {
        if (Date.now() > deadline) {
          throw new Error(`GET ${this.replicatorUrl}/metrics failed (replicator pid ${this.replicator?.pid}, running: ${this.replicator?.running})`, { cause: err });
        }
        await new Promise((r) => setTimeout(r, 200));
      }
    }
    const out = new Map<string, number>();
    for (const line of text.split('\n')) {
      if (line.startsWith('#') || line.trim() === '') continue;
      const i = line.lastIndexOf(' ');
      out.set(line.slice(0, i), Number(line.slice(i + 1)));
    }
    return out;
  }

  device(kind: 'client' | 'gateway', token: string, options: DeviceOptions = {}): Device {
    const device = new Device(() => this.workerUrl, kind, token, options);
    this.devices.push(device);
    return device;
  }

  async close(): Promise<void> {
    for (const d of this.devices) d.terminate();
    await this.stopReplicator('SIGKILL').catch(() => undefined);
    await this.stopWorker('SIGKILL').catch(() => undefined);
    await rm(this.persistDir, { recursive: true, force: true });
    await this.db.drop();
  }
}

/**
 * The stack of a test file: started before its tests, closed after them, and its last `tail` log
 * lines printed under each test that fails.
 */
export function useStack(options: { tail?: number; workerVars?: Record<string, string> } = {}): { readonly stack: Stack } {
  let stack: Stack | undefined;
  beforeAll(async () => {
    stack = await Stack.start({ workerVars: options.workerVars });
  });
  afterAll(async () => {
    await stack?.close();
  });
  beforeEach(({ onTestFailed }) => {
    onTestFailed(() => console.error(`--- stack logs ---\n${stack?.tail(options.tail)}`));
  });
  return {
    get stack(): Stack {
      if (!stack) throw new Error('the stack is not started: use it inside a test or a hook');
      return stack;
    },
  };
}
