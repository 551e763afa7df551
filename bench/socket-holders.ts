/**
 * Device sockets spread over child processes (bench/socket-holder.ts): each holds its share, so
 * that no process passes the machine's 20,000 open files and the clients' work is not one
 * core's. `connect` starts every holder's share at once and resolves with each device's `init`
 * arrival (wall-clock ms, in the order of the URLs).
 */
import { fork, type ChildProcess } from 'node:child_process';
import { once } from 'node:events';
import path from 'node:path';
import { ROOT } from '../dev/root.ts';

export type HolderCommand = { type: 'connect'; urls: string[]; inFlight: number } | { type: 'close' };
export type HolderReply = { type: 'connected'; initAt: number[]; retries: number } | { type: 'closed' } | { type: 'error'; message: string };

export interface Storm {
  /** Per URL, when its `init` arrived (Date.now() scale). */
  initAt: number[];
  retries: number;
}

export class SocketHolders {
  private constructor(private readonly children: ChildProcess[]) {}

  static async start(count: number): Promise<SocketHolders> {
    const children = Array.from({ length: count }, () =>
      fork(path.join(ROOT, 'bench/socket-holder.ts'), [], { execArgv: ['--import', 'tsx'], cwd: ROOT, stdio: ['ignore', 'inherit', 'inherit', 'ipc'] }),
    );
    await Promise.all(children.map((c) => once(c, 'spawn')));
    return new SocketHolders(children);
  }

  private ask(child: ChildProcess, command: HolderCommand): Promise<HolderReply> {
    return new Promise((resolve, reject) => {
      const onExit = (code: number | null) => reject(new Error(`socket holder ${child.pid} exited (${code})`));
      child.once('exit', onExit);
      child.once('message', (r: HolderReply) => {
        child.off('exit', onExit);
        if (r.type === 'error') reject(new Error(`socket holder ${child.pid}: ${r.message}`));
        else resolve(r);
      });
      child.send(command);
    });
  }

  /** Every URL at once: holder i takes URLs i, i + n, ..., each with `inFlight` handshakes in flight. */
  async connect(urls: readonly string[], inFlight: number): Promise<Storm> {
    const n = this.children.length;
    const shares = this.children.map((_, i) => urls.filter((_u, j) => j % n === i));
    const replies = await Promise.all(this.children.map((c, i) => this.ask(c, { type: 'connect', urls: shares[i]!, inFlight })));
    const initAt = new Array<number>(urls.length);
    let retries = 0;
    for (const [i, r] of replies.entries()) {
      if (r.type !== 'connected') throw new Error(`socket holder: unexpected ${r.type}`);
      for (const [k, at] of r.initAt.entries()) initAt[i + k * n] = at;
      retries += r.retries;
    }
    return { initAt, retries };
  }

  async close(): Promise<void> {
    await Promise.all(this.children.map((c) => this.ask(c, { type: 'close' })));
  }

  stop(): void {
    for (const c of this.children) c.kill('SIGTERM');
  }
}
