import { type ChildProcess, fork } from 'node:child_process';
import { once } from 'node:events';
import path from 'node:path';
import { deviceSocketUrl } from '../../dev/device-url.ts';
import { ROOT } from '../../dev/root.ts';
import type { HeldDevice, HolderCommand, HolderReport } from './socket-holder.ts';

/** A storm's outcome, per URL in the order given. */
export interface Storm {
  /** When each URL's `init` arrived (Date.now() scale; NaN for one that failed). */
  initAt: number[];
  inits: number;
  failed: number;
  retries: number;
  firstError?: string;
}

/** Device `i`'s own address under 10.<net>.0.0/16 (250 devices a /24; `i` below 62,500). */
export function deviceAddress(i: number, net: number): string {
  return `10.${net}.${Math.floor(i / 250)}.${(i % 250) + 1}`;
}

/**
 * Device sockets spread over child processes (socket-holder.ts): the local runtime holds every
 * socket in one workerd and one process here may open 20,000 files, so the clients of a
 * 10,000-socket run cannot all live in one process next to its other files, and their work is
 * not one core's.
 */
export class SocketHolders {
  private constructor(private readonly children: ChildProcess[]) {}

  static async spawn(processes: number): Promise<SocketHolders> {
    const children = Array.from({ length: processes }, () =>
      fork(path.join(ROOT, 'test/support/socket-holder.ts'), [], { execArgv: ['--import', 'tsx'], cwd: ROOT, stdio: ['ignore', 'inherit', 'inherit', 'ipc'] }),
    );
    await Promise.all(children.map((c) => once(c, 'spawn')));
    return new SocketHolders(children);
  }

  private ask<K extends HolderReport['kind']>(child: ChildProcess, command: HolderCommand, kind: K): Promise<Extract<HolderReport, { kind: K }>> {
    return new Promise((resolve, reject) => {
      const onMessage = (r: HolderReport) => {
        if (r.kind !== kind) return;
        child.off('message', onMessage);
        child.off('exit', onExit);
        resolve(r as Extract<HolderReport, { kind: K }>);
      };
      const onExit = (code: number | null) => reject(new Error(`a socket holder exited (code ${code}) before answering ${command.cmd}`));
      child.on('message', onMessage);
      child.once('exit', onExit);
      child.send(command);
    });
  }

  /**
   * Every device at once: holder i takes devices i, i + n, ..., each with `concurrency`
   * handshakes in flight. `keepalive`: each sends a `ping` on its init, as devices do.
   */
  async connectAll(devices: readonly HeldDevice[], concurrency: number, keepalive = true): Promise<Storm> {
    const n = this.children.length;
    const shares = this.children.map((_, i) => devices.filter((_d, j) => j % n === i));
    const replies = await Promise.all(this.children.map((c, i) => this.ask(c, { cmd: 'connect', devices: shares[i]!, concurrency, keepalive }, 'connected')));
    const initAt = new Array<number>(devices.length);
    for (const [i, r] of replies.entries()) for (const [k, at] of r.initAt.entries()) initAt[i + k * n] = at;
    const firstError = replies.map((r) => r.firstError).find(Boolean);
    return {
      initAt,
      inits: sum(replies, (r) => r.inits),
      failed: sum(replies, (r) => r.failed),
      retries: sum(replies, (r) => r.retries),
      ...(firstError ? { firstError } : {}),
    };
  }

  /**
   * `perProcess` clients of one token in each process, the external ids `<prefix>-<process>-<i>`,
   * each from an address of its own (10.<100 + process>.y.z, 250 devices a /24).
   */
  async connectClients(url: string, token: string, perProcess: number, prefix: string, concurrency: number): Promise<Storm> {
    const devices: HeldDevice[] = [];
    for (let i = 0; i < perProcess; i++) {
      for (let p = 0; p < this.children.length; p++) {
        const id = `${prefix}-${p}-${i}`;
        devices.push({
          url: deviceSocketUrl(url, 'client', { token, externalId: id, name: id, publicKey: `pk-${id}`, version: '1.4.2' }),
          address: deviceAddress(i, 100 + p),
        });
      }
    }
    return await this.connectAll(devices, concurrency);
  }

  /** Waits until every socket got `event` for `id`: how many did, and when the last one did. */
  async received(event: string, id: string): Promise<{ n: number; lastAt: number }> {
    const replies = await Promise.all(this.children.map((c) => this.ask(c, { cmd: 'expect', event, id }, 'received')));
    return { n: sum(replies, (r) => r.n), lastAt: Math.max(...replies.map((r) => r.lastAt)) };
  }

  /** Closes every socket; the processes stay for the next connect. */
  async close(): Promise<void> {
    await Promise.all(this.children.map((c) => this.ask(c, { cmd: 'close' }, 'closed')));
  }

  async stop(): Promise<void> {
    await Promise.all(
      this.children.map(
        (c) =>
          new Promise<void>((resolve) => {
            if (c.exitCode !== null || c.signalCode !== null) return resolve();
            c.once('exit', () => resolve());
            c.send({ cmd: 'stop' } satisfies HolderCommand);
            setTimeout(() => c.kill('SIGKILL'), 10_000).unref();
          }),
      ),
    );
  }
}

function sum<T>(items: readonly T[], of: (item: T) => number): number {
  return items.reduce((n, item) => n + of(item), 0);
}
