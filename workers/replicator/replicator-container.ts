import { Container, type StopParams } from '@cloudflare/containers';
import { errorSummary } from '../../src/errors.ts';
import { log } from '../log.ts';
import { replicatorSettings } from './replicator-env.ts';
import { REPLICATOR_PORT } from './replicator-shape.ts';
import { afterHealthCheck, afterStop, FRESH_RECORD, type ReplicatorRecord } from './restart-policy.ts';

type ContainerContext = ConstructorParameters<typeof Container>[0];

const RECORD_KEY = 'replicator';
const HEALTH_TIMEOUT_MS = 5_000;

/** What one instance answered to `ensureRunning`, logged by the cron (workers/replicator/keep-running.ts). */
export interface ReplicatorReport {
  instance: string;
  /** `misconfigured`: not started (see problems); `waiting`: backing off after a stop. */
  status: 'misconfigured' | 'waiting' | 'started' | 'healthy' | 'unhealthy' | 'restarting' | 'start failed';
  problems?: string[];
  /** The replicator's /healthz body: `state` is `streaming` on the active one, `standby` on the other. */
  health?: unknown;
}

/**
 * The replicator (replicator/Dockerfile) as a Cloudflare Container, one per instance name
 * (docs/protocol.md#replicator-container). The object keeps it running: started by the cron and
 * by its own alarm, restarted with backoff when it stops or errs, and restarted when /healthz has
 * failed for UNHEALTHY_RESTART_MS. It never sleeps: the activity timeout (`sleepAfter`) is only
 * the period of the alarm's health check. The replicator keeps no state (the slot is its memory),
 * so a restart, a host restart or an ephemeral disk loses nothing.
 */
export class ReplicatorContainer extends Container<Env> {
  override defaultPort = REPLICATOR_PORT;
  override sleepAfter = '1m';
  // Postgres and this Worker's public URL are on the internet.
  override enableInternet = true;
  // Readiness of the port: any answer counts (a standby's /healthz answers 200 too).
  override pingEndpoint = 'replicator/healthz';
  private readonly problems: string[];

  constructor(ctx: ContainerContext, env: Env) {
    super(ctx, env);
    const settings = replicatorSettings(env);
    this.envVars = settings.envVars;
    this.problems = settings.problems;
  }

  private get instance(): string {
    return this.ctx.id.name ?? this.ctx.id.toString();
  }

  private async record(): Promise<ReplicatorRecord> {
    return (await this.ctx.storage.get<ReplicatorRecord>(RECORD_KEY)) ?? FRESH_RECORD;
  }

  private async save(record: ReplicatorRecord): Promise<void> {
    await this.ctx.storage.put(RECORD_KEY, record);
  }

  /** Idempotent: start the container if it is not running, else check its health. Called by the cron, the alarm and scheduled restarts. */
  async ensureRunning(trigger: string): Promise<ReplicatorReport> {
    const instance = this.instance;
    if (this.problems.length > 0) {
      log.error({ component: 'replicator-container', instance, trigger, problems: this.problems }, 'not starting the replicator: its configuration is incomplete');
      return { instance, status: 'misconfigured', problems: this.problems };
    }
    const now = Date.now();
    const record = await this.record();
    if (!this.ctx.container?.running) {
      if (record.notBefore !== undefined && now < record.notBefore) return { instance, status: 'waiting' };
      return this.startReplicator(trigger);
    }
    const health = await this.health();
    const { record: next, action } = afterHealthCheck(record, health.ok, now);
    await this.save(next);
    if (action === 'stop') {
      log.error({ component: 'replicator-container', instance, trigger, health: JSON.stringify(health.body) }, 'replicator unhealthy for too long: restarting it (SIGTERM)');
      await this.stop('SIGTERM');
      return { instance, status: 'restarting', health: health.body };
    }
    if (action === 'destroy') {
      log.error({ component: 'replicator-container', instance, trigger }, 'replicator did not exit after SIGTERM: destroying it');
      await this.destroy();
      return { instance, status: 'restarting' };
    }
    return { instance, status: health.ok ? 'healthy' : 'unhealthy', health: health.body };
  }

  /** The scheduled restart after a stop (this.schedule calls it by name). */
  async restart(): Promise<void> {
    await this.ensureRunning('restart');
  }

  private async startReplicator(trigger: string): Promise<ReplicatorReport> {
    const instance = this.instance;
    // Deliver any stop of the previous run still pending in the base class (stop() on a container
    // that is not running signals nothing), so that it cannot count against this one.
    await this.stop();
    const record = await this.record();
    if (record.notBefore !== undefined && record.notBefore > Date.now()) return { instance, status: 'waiting' };
    await this.save({ failures: record.failures, startedAt: Date.now() });
    try {
      await this.startAndWaitForPorts({ ports: REPLICATOR_PORT });
      log.info({ component: 'replicator-container', instance, trigger }, 'replicator started');
      return { instance, status: 'started' };
    } catch (err) {
      await this.scheduleRestart('start failed', errorSummary(err));
      return { instance, status: 'start failed', problems: [errorSummary(err)] };
    }
  }

  private async health(): Promise<{ ok: boolean; body: unknown }> {
    try {
      const response = await this.containerFetch('http://replicator/healthz', { signal: AbortSignal.timeout(HEALTH_TIMEOUT_MS) });
      const body = await response.text();
      try {
        return { ok: response.ok, body: JSON.parse(body) as unknown };
      } catch {
        return { ok: response.ok, body };
      }
    } catch (err) {
      return { ok: false, body: { error: errorSummary(err) } };
    }
  }

  private async scheduleRestart(why: string, detail: string): Promise<void> {
    const now = Date.now();
    const current = await this.record();
    // One stop per run: an exit reaches onError and onStop, a failed start onError and the
    // caller's catch, and @cloudflare/containers may deliver a stop again before the next start.
    // afterStop clears startedAt, so only the first of them counts and schedules.
    if (current.startedAt === undefined) return;
    const record = afterStop(current, now);
    await this.save(record);
    const delayMs = Math.max(0, (record.notBefore ?? now) - now);
    this.deleteSchedules('restart');
    await this.schedule(Math.ceil(delayMs / 1000), 'restart');
    log.warn({ component: 'replicator-container', instance: this.instance, why, detail, failures: record.failures, restartInMs: delayMs }, 'replicator stopped: restart scheduled');
  }

  override async onStop(params: StopParams): Promise<void> {
    await this.scheduleRestart('stopped', `exit code ${params.exitCode} (${params.reason})`);
  }

  override async onError(error: unknown): Promise<void> {
    await this.scheduleRestart('error', errorSummary(error));
  }

  // The activity timeout is the health check's period, never a reason to stop (the base class's default).
  override async onActivityExpired(): Promise<void> {
    await this.ensureRunning('alarm');
  }
}
