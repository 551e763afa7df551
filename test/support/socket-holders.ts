import { type ChildProcess, fork } from 'node:child_process';
import path from 'node:path';
import { ROOT } from '../../dev/root.ts';
import type { HolderCommand, HolderReport } from './socket-holder.ts';

/**
 * Client sockets spread over child processes (socket-holder.ts), `perProcess` each: the local
 * runtime holds every socket in one workerd, and one process here may open 20,000 files, so the
 * clients of a 10,000-socket run cannot all live in the test's process next to its other files.
 */
export class SocketHolders {
  private constructor(private readonly children: ChildProcess[]) {}

  static spawn(processes: number): SocketHolders {
    const children = Array.from({ length: processes }, () =>
      fork(path.join(ROOT, 'test/support/socket-holder.ts'), [], { execArgv: ['--import', 'tsx'], stdio: ['ignore', 'inherit', 'inherit', 'ipc'] }),
    );
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

  /** Connects `perProcess` clients of `token` in each process; the external ids start with `prefix`. */
  async connect(url: string, token: string, perProcess: number, prefix: string, concurrency: number): Promise<Extract<HolderReport, { kind: 'connected' }>[]> {
    return await Promise.all(
      this.children.map((c, i) => this.ask(c, { cmd: 'start', url, token, count: perProcess, prefix: `${prefix}-${i}`, concurrency, addressBase: `10.${100 + i}` }, 'connected')),
    );
  }

  /** Waits until every socket got `event` for `id`. */
  async received(event: string, id: string): Promise<Extract<HolderReport, { kind: 'received' }>[]> {
    return await Promise.all(this.children.map((c) => this.ask(c, { cmd: 'expect', event, id }, 'received')));
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
