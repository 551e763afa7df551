import { spawn, type ChildProcess } from 'node:child_process';
import { once } from 'node:events';
import { createInterface } from 'node:readline';

export interface ChildOptions {
  cwd?: string;
  env: Record<string, string | undefined>;
  /** Each line of stdout and stderr. */
  onLine?: (line: string, stream: 'stdout' | 'stderr') => void;
  /** Run as this user (when we are root). */
  uid?: number;
  gid?: number;
}

export interface Exit {
  code: number | null;
  signal: NodeJS.Signals | null;
}

/**
 * A child process in its own process group: a Ctrl-C in the terminal reaches only the parent,
 * which stops its children in the order it chooses, and stopping one stops everything it started
 * (wrangler's workerd, tsx's node).
 */
export class Child {
  readonly process: ChildProcess;
  readonly exited: Promise<Exit>;
  private exit: Exit | undefined;

  constructor(
    readonly name: string,
    command: string,
    args: readonly string[],
    options: ChildOptions,
  ) {
    this.process = spawn(command, args, {
      cwd: options.cwd,
      env: options.env,
      stdio: ['ignore', 'pipe', 'pipe'],
      detached: true,
      ...(options.uid !== undefined ? { uid: options.uid } : {}),
      ...(options.gid !== undefined ? { gid: options.gid } : {}),
    });
    const onLine = options.onLine ?? (() => {});
    createInterface({ input: this.process.stdout! }).on('line', (l) => onLine(l, 'stdout'));
    createInterface({ input: this.process.stderr! }).on('line', (l) => onLine(l, 'stderr'));
    this.exited = once(this.process, 'exit').then(([code, signal]) => {
      this.exit = { code: code as number | null, signal: signal as NodeJS.Signals | null };
      return this.exit;
    });
    // A spawn failure (ENOENT) surfaces as an exit with no code.
    this.process.on('error', () => {});
  }

  get pid(): number | undefined {
    return this.process.pid;
  }

  get running(): boolean {
    return this.exit === undefined;
  }

  /** Sends a signal to the whole group. */
  signal(signal: NodeJS.Signals): void {
    if (this.process.pid === undefined) return;
    try {
      process.kill(-this.process.pid, signal);
    } catch {
      // The group is gone.
    }
  }

  /** `signal` to the group, SIGKILL after `graceMs`; then SIGKILL whatever of the group is left. */
  async stop(signal: NodeJS.Signals = 'SIGTERM', graceMs = 10_000): Promise<Exit> {
    if (this.running) {
      this.signal(signal);
      const timer = setTimeout(() => this.signal('SIGKILL'), graceMs);
      await this.exited;
      clearTimeout(timer);
    }
    this.signal('SIGKILL');
    return await this.exited;
  }
}
