import { env, runInDurableObject } from 'cloudflare:test';
import { describe, expect, it } from 'vitest';
import { ReplicatorContainer } from '../../workers/replicator/replicator-container.ts';
import { UNHEALTHY_RESTART_MS } from '../../workers/replicator/restart-policy.ts';

// docs/protocol.md#replicator-container: the object's decisions, with the real ReplicatorContainer
// (and @cloudflare/containers' Container) over a real object's SQLite storage, and a fake
// `ctx.container` in place of the platform's (workerd runs containers only with a Docker engine).

interface StartCall {
  env?: Record<string, string>;
  enableInternet?: boolean;
}

class FakeContainer {
  running = false;
  starts: StartCall[] = [];
  signals: number[] = [];
  health = 200;
  private exit?: (code: number) => void;
  private monitored: Promise<void> = Promise.resolve();

  start(options: StartCall): void {
    this.running = true;
    this.starts.push(options);
    this.monitored = new Promise<void>((resolve, reject) => {
      this.exit = (code) => {
        this.running = false;
        if (code === 0) resolve();
        else reject(new Error(`the replicator exited with code ${code}`));
      };
    });
    // The monitor's rejection is observed by the Container class; keep the runtime quiet until then.
    this.monitored.catch(() => {});
  }

  monitor(): Promise<void> {
    return this.monitored;
  }

  getTcpPort(_port: number) {
    return {
      fetch: async (url: string) => {
        if (!this.running) throw new Error('container is not listening');
        const healthy = this.health === 200;
        return new Response(JSON.stringify({ healthy, ready: healthy, state: 'streaming', url }), { status: this.health });
      },
    };
  }

  signal(signal: number): void {
    this.signals.push(signal);
    // The replicator drains and exits 0 on SIGTERM (15).
    if (signal === 15) this.exit?.(0);
  }

  async destroy(): Promise<void> {
    this.exit?.(137);
  }

  /** The process ends by itself (a crash, a host restart). */
  crash(code: number): void {
    this.exit?.(code);
  }
}

const deployed = {
  ...env,
  EDGEPLANE_ENV: undefined,
  REPLICATOR_SECRET: 'a-production-secret-of-at-least-32-bytes-0123456789',
  REPLICATION_DATABASE_URL: 'postgres://repl:pw@db.example.net:5432/app',
  EDGE_URL: 'https://edgeplane.acme.workers.dev',
  SLOT_NAME: 'edgeplane',
} as Env;

/**
 * Runs `body` with a ReplicatorContainer on a fresh object's storage (a DIRECTORY object of its own
 * name, whose storage nothing else uses): alarms are not set, the test drives every call.
 */
async function withReplicator(
  name: string,
  environment: Env,
  body: (replicator: ReplicatorContainer, container: FakeContainer, storage: DurableObjectStorage, wake: () => ReplicatorContainer) => Promise<void>,
) {
  await runInDurableObject(env.DIRECTORY.get(env.DIRECTORY.idFromName(name)), async (_instance, state) => {
    const container = new FakeContainer();
    const storage = new Proxy(state.storage, {
      get(target, prop) {
        if (prop === 'setAlarm' || prop === 'deleteAlarm' || prop === 'sync') return async () => {};
        const value = Reflect.get(target, prop, target);
        return typeof value === 'function' ? value.bind(target) : value;
      },
    });
    // The runtime's DurableObject wants the real state object: own properties shadow its getters.
    Object.defineProperty(state, 'container', { value: container, configurable: true });
    Object.defineProperty(state, 'id', { value: { name, toString: () => name }, configurable: true });
    const realStorage = state.storage;
    Object.defineProperty(state, 'storage', { value: storage, configurable: true });
    const wake = () => new ReplicatorContainer(state as ConstructorParameters<typeof ReplicatorContainer>[0], environment);
    await body(wake(), container, realStorage, wake);
  });
}

const until = async (what: string, probe: () => boolean | Promise<boolean>, timeoutMs = 5_000) => {
  const deadline = Date.now() + timeoutMs;
  while (!(await probe())) {
    if (Date.now() > deadline) throw new Error(`${what} not reached within ${timeoutMs} ms`);
    await new Promise((r) => setTimeout(r, 20));
  }
};

describe('ReplicatorContainer', () => {
  it('starts the replicator with its environment, then only checks its health', async () => {
    await withReplicator('lifecycle-start', deployed, async (replicator, container) => {
      expect(await replicator.ensureRunning('cron')).toEqual({ instance: 'lifecycle-start', status: 'started' });
      expect(container.starts).toHaveLength(1);
      expect(container.starts[0]?.enableInternet).toBe(true);
      expect(container.starts[0]?.env).toMatchObject({
        DATABASE_URL: 'postgres://repl:pw@db.example.net:5432/app',
        EDGE_URL: 'https://edgeplane.acme.workers.dev',
        REPLICATOR_SECRET: deployed.REPLICATOR_SECRET,
        REPLICATOR_PORT: '9187',
        SLOT_NAME: 'edgeplane',
      });
      expect(await replicator.ensureRunning('cron')).toMatchObject({ status: 'healthy', health: { healthy: true, state: 'streaming' } });
      // The activity timeout checks health instead of stopping the container.
      await replicator.onActivityExpired();
      expect(container.starts).toHaveLength(1);
      expect(container.signals).toEqual([]);
    });
  });

  it('wakes up with its container running (an evicted object) and checks it, without starting another', async () => {
    await withReplicator('lifecycle-wake', deployed, async (replicator, container, _storage, wake) => {
      await replicator.ensureRunning('cron');
      // A new instance of the object, as after an eviction or a deploy of the Worker, finds the
      // container running (the base class then sets up outbound interception: ContainerProxy).
      const woken = wake();
      expect((await woken.ensureRunning('cron')).status).toBe('healthy');
      expect(container.starts).toHaveLength(1);
    });
  });

  it('starts nothing without its configuration', async () => {
    await withReplicator('lifecycle-misconfigured', { ...deployed, REPLICATION_DATABASE_URL: undefined } as Env, async (replicator, container) => {
      const report = await replicator.ensureRunning('cron');
      expect(report.status).toBe('misconfigured');
      expect(report.problems).toEqual([expect.stringMatching(/^REPLICATION_DATABASE_URL is not set/)]);
      expect(container.starts).toEqual([]);
    });
  });

  it('restarts a replicator whose /healthz has failed for too long: SIGTERM, then a start after the backoff', async () => {
    await withReplicator('lifecycle-unhealthy', deployed, async (replicator, container, storage) => {
      await replicator.ensureRunning('cron');
      container.health = 503;
      // One failed check is not enough.
      expect((await replicator.ensureRunning('cron')).status).toBe('unhealthy');
      expect(container.signals).toEqual([]);
      // Failing since UNHEALTHY_RESTART_MS ago.
      const record = (await storage.get<{ unhealthySince: number }>('replicator')) as { unhealthySince: number };
      await storage.put('replicator', { ...record, unhealthySince: Date.now() - UNHEALTHY_RESTART_MS });
      expect((await replicator.ensureRunning('cron')).status).toBe('restarting');
      expect(container.signals).toEqual([15]);
      await until('the restart scheduled', async () => (await replicator.listSchedules('restart')).length === 1);
      // Backing off: the cron does not start it early...
      container.health = 200;
      expect((await replicator.ensureRunning('cron')).status).toBe('waiting');
      // ...the scheduled restart (or the next cron) does, once the delay is over.
      const { notBefore } = (await storage.get<{ notBefore: number }>('replicator')) as { notBefore: number };
      await new Promise((r) => setTimeout(r, Math.max(0, notBefore - Date.now()) + 10));
      await replicator.restart();
      expect(container.starts).toHaveLength(2);
      // The base class delivers the old run's stop again before the start: it counted once.
      expect((await storage.get<{ failures: number }>('replicator'))?.failures).toBe(1);
      expect((await replicator.ensureRunning('cron')).status).toBe('healthy');
    });
  });

  it('schedules one restart when the replicator crashes, and backs off further when it crashes again soon', async () => {
    await withReplicator('lifecycle-crash', deployed, async (replicator, container, storage) => {
      await replicator.ensureRunning('cron');
      container.crash(1);
      await until('the crash noticed', async () => (await storage.get<{ notBefore?: number }>('replicator'))?.notBefore !== undefined);
      // The exit reaches onError (and later onStop): one failure, one restart.
      await replicator.onStop({ exitCode: 1, reason: 'exit' });
      const first = (await storage.get<{ failures: number; notBefore: number }>('replicator')) as { failures: number; notBefore: number };
      expect(first.failures).toBe(1);
      expect(await replicator.listSchedules('restart')).toHaveLength(1);
      await new Promise((r) => setTimeout(r, Math.max(0, first.notBefore - Date.now()) + 10));
      expect((await replicator.ensureRunning('cron')).status).toBe('started');
      container.crash(1);
      await until('the second crash noticed', async () => ((await storage.get<{ failures: number }>('replicator'))?.failures ?? 0) === 2);
      const second = (await storage.get<{ failures: number; notBefore: number }>('replicator')) as { failures: number; notBefore: number };
      expect(second.notBefore - Date.now()).toBeGreaterThan(first.notBefore - Date.now());
    });
  });
});
