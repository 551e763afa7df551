import { spawn, type ChildProcess } from 'node:child_process';
import { once } from 'node:events';
import { createInterface } from 'node:readline';
import { ROOT } from '../../dev/root.ts';
import type { Health } from '../../replicator/service.ts';

export interface LogLine {
  level: string;
  msg: string;
  [key: string]: unknown;
}

/** How the replicator is started: Node with tsx by default; test/replicator/runtimes.pg.test.ts runs Bun and Deno too. */
export const NODE_REPLICATOR: readonly string[] = [process.execPath, '--import', 'tsx', 'replicator/main.ts'];

/** The replicator as a real process (`replicator/main.ts`), with its JSON log lines collected. */
export class ReplicatorProcess {
  readonly logs: LogLine[] = [];
  readonly stderr: string[] = [];
  port = 0;
  private readonly child: ChildProcess;
  readonly exited: Promise<{ code: number | null; signal: NodeJS.Signals | null }>;

  constructor(env: Record<string, string>, command: readonly string[] = NODE_REPLICATOR) {
    const [file, ...args] = command as [string, ...string[]];
    this.child = spawn(file, args, {
      cwd: ROOT,
      env: { PATH: process.env.PATH ?? '', REPLICATOR_PORT: '0', LOG_LEVEL: 'debug', ...env },
      stdio: ['ignore', 'pipe', 'pipe'],
    });
    createInterface({ input: this.child.stdout! }).on('line', (line) => {
      try {
        const parsed = JSON.parse(line) as LogLine;
        this.logs.push(parsed);
        if (parsed.msg === 'replicator started') this.port = Number(parsed.port);
      } catch {
        this.stderr.push(line);
      }
    });
    createInterface({ input: this.child.stderr! }).on('line', (line) => this.stderr.push(line));
    this.exited = once(this.child, 'exit').then(([code, signal]) => ({ code: code as number | null, signal: signal as NodeJS.Signals | null }));
  }

  get pid(): number | undefined {
    return this.child.pid;
  }

  kill(signal: NodeJS.Signals = 'SIGKILL'): void {
    this.child.kill(signal);
  }

  async waitForLog(predicate: (line: LogLine) => boolean, timeoutMs = 30_000): Promise<LogLine> {
    const deadline = Date.now() + timeoutMs;
    for (;;) {
      const found = this.logs.find(predicate);
      if (found) return found;
      if (Date.now() > deadline)
        throw new Error(
          `no such log line within ${timeoutMs} ms; last lines:\n${this.logs
            .slice(-10)
            .map((l) => JSON.stringify(l))
            .join('\n')}\n${this.stderr.slice(-10).join('\n')}`,
        );
      await new Promise((r) => setTimeout(r, 25));
    }
  }

  async streaming(timeoutMs = 30_000): Promise<void> {
    await this.waitForLog((l) => l.msg === 'streaming', timeoutMs);
  }

  async get(pathname: string): Promise<{ status: number; text: string }> {
    const response = await fetch(`http://127.0.0.1:${this.port}${pathname}`);
    return { status: response.status, text: await response.text() };
  }

  /** One unlabelled metric of /metrics (NaN when absent). */
  async metric(name: string): Promise<number> {
    const text = (await this.get('/metrics')).text;
    return Number(new RegExp(`^${name} (\\S+)$`, 'm').exec(text)?.[1] ?? Number.NaN);
  }

  /** /healthz, parsed, whatever its status. */
  async health(): Promise<Health> {
    return JSON.parse((await this.get('/healthz')).text) as Health;
  }

  async stop(): Promise<void> {
    if (this.child.exitCode !== null || this.child.signalCode !== null) return;
    this.kill('SIGKILL');
    await this.exited;
  }
}

export async function eventually<T>(probe: () => Promise<T | undefined | false> | T | undefined | false, timeoutMs = 30_000, what = 'condition'): Promise<T> {
  const deadline = Date.now() + timeoutMs;
  let last: unknown;
  for (;;) {
    try {
      const value = await probe();
      if (value !== undefined && value !== false) return value;
    } catch (err) {
      last = err;
    }
    if (Date.now() > deadline) throw new Error(`${what} not reached within ${timeoutMs} ms${last ? `: ${String(last)}` : ''}`);
    await new Promise((r) => setTimeout(r, 50));
  }
}
