import { DurableObject } from 'cloudflare:workers';
import { nextTimeBoundary } from '../../src/access/access.ts';
import { AccountState } from '../../src/access/account-state.ts';
import { applyChange, type StorageOp } from '../../src/access/apply-change.ts';
import { Dirty } from '../../src/access/dirty.ts';
import { dueAt, expiredTokens, nextWake } from '../../src/alarm.ts';
import type { Change } from '../../src/change.ts';
import { earliest } from '../../src/flows/authorize.ts';
import { readFlowLimits } from '../../src/flows/limits.ts';
import { FlowRateLimiter } from '../../src/flows/rate-limit.ts';
import { asId, type AccountId } from '../../src/ids.ts';
import { formatPosition } from '../../src/lsn.ts';
import { planBatch } from '../../src/ordering.ts';
import { decodeRow, type Cached, type RowDecodeError } from '../../src/records.ts';
import { unchangedDevice } from '../../src/devices.ts';
import { parseConnectParams, type DeviceKind } from '../connect-params.ts';
import { errorResponse } from '../http-errors.ts';
import { log } from '../log.ts';
import { CacheStaging } from './cache-staging.ts';
import { CacheStore } from './cache-store.ts';
import { CACHE_SCHEMA_VERSION } from './cache-tables.ts';
import { acceptDevice, admit } from './connect.ts';
import { DatabaseError } from './database.ts';
import { onDeviceMessage, type DeviceMessageContext } from './device-message.ts';
import { DeviceWriter } from './devices.ts';
import { AlarmClock } from './alarm-clock.ts';
import { FlowLogWriter } from './flow-log.ts';
import { FlowStore } from './flow-store.ts';
import { FreshTokens } from './fresh-tokens.ts';
import { hydrate } from './hydrate.ts';
import { MetaStore } from './meta-store.ts';
import type { AccountMemory, ObjectContext } from './object-context.ts';
import { propagate } from './propagate.ts';
import { foldPendingResync, resyncDelayMs, resyncOf } from './resync.ts';
import { attachmentOf } from './sockets.ts';
import { ViewStore } from './view-store.ts';

/** `accountExists`: the object holds its account row (any state but deleted) afterwards; the Worker tells the directory. */
export type ApplyResult = { ok: true; applied: number; skipped: number; position: string | null; accountExists: boolean } | { ok: false; status: 400 | 503; error: string };

/**
 * After a wake, how soon the object drops the digests of connections gone meanwhile: past the
 * batch or connect that woke it, and soon enough that the instance is still running.
 */
const VIEW_SWEEP_DELAY_MS = 1_000;

/**
 * One account's object (DESIGN "AccountDO"): ordered compact caches in SQLite, consistent
 * hydration, the hibernating sockets of the account's clients and gateways, and the diffs and
 * flow decisions pushed to them.
 */
export class AccountDO extends DurableObject<Env> {
  private readonly object: ObjectContext;
  private readonly clock: AlarmClock;
  private readonly flowLog: FlowLogWriter;
  private readonly freshTokens: FreshTokens;
  private readonly devices: DeviceWriter;
  /** Hydrations this instance began: one that began after a connect did reads every token committed before it. */
  private hydrations = 0;
  private readonly frames: DeviceMessageContext;
  private memory: AccountMemory | undefined;
  /** Pushes that failed in a row (workers/account/resync.ts). */
  private pushFailures = 0;
  /** Open sockets; undefined until counted in this instance (counting materializes every socket). */
  private socketCount: number | undefined;
  /** Whether this instance has yet to drop the view digests of connections that closed while no instance ran (see ready). */
  private viewsToSweep = false;

  constructor(ctx: DurableObjectState, env: Env) {
    super(ctx, env);
    const sql = ctx.storage.sql;
    this.object = { ctx, caches: new CacheStore(sql), meta: new MetaStore(sql), views: new ViewStore(sql), flowStore: new FlowStore(sql) };
    this.clock = new AlarmClock(ctx.storage);
    const limits = readFlowLimits(env as unknown as Record<string, unknown>);
    this.flowLog = new FlowLogWriter(
      this.object.flowStore,
      env.DB,
      ctx,
      () => this.object.meta.accountId,
      (at) => this.clock.noLaterThan(at),
      async () => {
        if (this.memory) await this.rescheduleAlarm(this.memory);
      },
      limits.retentionMs,
    );
    this.freshTokens = new FreshTokens(env.DB);
    this.devices = new DeviceWriter(env.DB);
    this.frames = {
      object: this.object,
      limits,
      limiter: new FlowRateLimiter(limits.ratePerSecond, limits.burst),
      memory: () => this.readyStored(),
      created: async (flow) => {
        this.flowLog.soon();
        // The alarm covers the outbox's maximum delay: its timer does not outlive the instance.
        await this.clock.noLaterThan(earliest(flow.expiresAt, this.flowLog.dueAt));
      },
    };
    // Answered by the runtime without waking the object.
    ctx.setWebSocketAutoResponse(new WebSocketRequestResponsePair('ping', 'pong'));
  }

  /** The account's state, hydrating from Postgres first when the object has none (or an older cache). */
  private async ready(accountId: AccountId): Promise<AccountMemory> {
    if (this.memory) return this.memory;
    const owner = this.object.meta.accountId;
    if (owner !== null && owner !== accountId) throw new Error(`object of account ${owner} asked to serve account ${accountId}`);
    await this.ctx.blockConcurrencyWhile(async () => {
      if (this.memory) return;
      const hydrated = owner === null || this.object.meta.cacheVersion !== CACHE_SCHEMA_VERSION ? await this.hydrate(accountId) : undefined;
      this.memory = { state: hydrated ?? this.object.caches.load(accountId), flows: this.object.flowStore.load() };
      // Flows created before an eviction or a restart may still wait in the outbox, for how long is unknown.
      this.flowLog.overdue();
      // Digests of connections that closed while no instance ran are dropped a moment later, not
      // here: that reads every socket's attachment, on the path of the batch or connect that
      // woke the object. Connection ids are never reused, so none of them is read meanwhile. A
      // timer rather than the alarm, whose instant the clock alone decides; an instance that
      // ends first leaves them to the next one's sweep, or to an alarm that comes sooner.
      if (!this.viewsToSweep) {
        this.viewsToSweep = true;
        setTimeout(() => this.sweepViews(), VIEW_SWEEP_DELAY_MS);
      }
    });
    return this.memory!;
  }

  private async readyStored(): Promise<AccountMemory | undefined> {
    if (this.memory) return this.memory;
    const accountId = this.object.meta.accountId;
    return accountId === null ? undefined : await this.ready(accountId);
  }

  /**
   * docs/architecture.md#hydration: load the account in one REPEATABLE READ query, with its
   * snapshot, page by page into a staged cache and the returned state. `restart`: also forget the
   * position (a reload), in the epoch given (else the one the snapshot saw).
   */
  private async hydrate(accountId: AccountId, restart?: { epoch: string | null }): Promise<AccountState> {
    const started = Date.now();
    this.hydrations++;
    const { ctx } = this;
    const { meta } = this.object;
    const staging = new CacheStaging(ctx.storage.sql);
    const state = new AccountState(accountId);
    ctx.storage.transactionSync(() => staging.begin());
    const h = await hydrate(this.env.DB, accountId, (records) => {
      ctx.storage.transactionSync(() => staging.put(records));
      for (const r of records) state.put(r);
    });
    try {
      ctx.storage.transactionSync(() => {
        staging.swap();
        meta.accountId = accountId;
        meta.cacheVersion = CACHE_SCHEMA_VERSION;
        meta.snapshot = { snapshot: h.snapshot, takenAt: Date.now() };
        meta.epoch = restart?.epoch ?? h.epoch;
        // With the new snapshot, in the same transaction: a crash between the two would keep a
        // position of the old stream next to a snapshot of the new one.
        if (restart) meta.position = null;
      });
    } catch (err) {
      meta.reset();
      throw err;
    }
    this.logProblems(accountId, h.problems, null);
    log.info({ component: 'account', account: accountId, records: h.records, ms: Date.now() - started }, 'hydrated');
    return state;
  }

  private logProblems(accountId: AccountId, problems: readonly RowDecodeError[], lsn: string | null): void {
    for (const p of problems) log.error({ component: 'account', account: accountId, lsn, table: p.table, issues: p.issues }, 'row does not fit the schema; treated as deleted');
  }

  /**
   * POST /v1/accounts/:id/changes, after the Worker checked the signature, the body and that every
   * change is of this account (the object is reached only through that route). Changes at
   * or below the stored position are skipped (docs/architecture.md#2-order and #3-idempotence); the batch is stored in one
   * transaction with the new position, then pushed to the sockets it affects.
   */
  async applyChanges(accountIdText: string, changes: Change[], epoch: string | null = null): Promise<ApplyResult> {
    const accountId = asId<'account'>(accountIdText);
    if (!accountId) return { ok: false, status: 400, error: `not an account id: ${accountIdText}` };
    let memory: AccountMemory;
    try {
      memory = await this.ready(accountId);
      const followed = this.object.meta.epoch;
      if (epoch !== null && followed !== null && followed !== epoch) {
        // Positions of another stream: comparing them with ours would skip or misorder changes.
        log.warn({ component: 'account', account: accountId, from: followed, to: epoch }, 'a batch of a new replication epoch: re-hydrating first');
        memory = await this.reload(accountId, epoch);
      }
    } catch (err) {
      if (err instanceof DatabaseError) return { ok: false, status: 503, error: err.message };
      throw err;
    }
    const now = Date.now();
    const { meta, caches } = this.object;
    const stored = meta.position;
    const plan = planBatch(stored, meta.snapshot, changes);
    const dirty = new Dirty();
    const ops: StorageOp[] = [];
    let problems = 0;
    try {
      for (const change of plan.apply) {
        const result = applyChange(memory.state, change, dirty);
        for (const op of result.ops) ops.push(op);
        problems += result.problems.length;
        this.logProblems(accountId, result.problems, change.lsn);
      }
      this.ctx.storage.transactionSync(() => {
        caches.write(ops);
        // Only a batch that moved the position writes it (an empty or all-stale batch leaves it).
        if (plan.advancedTo) meta.position = plan.advancedTo;
        if (plan.snapshotExpired) meta.snapshot = null;
        if (plan.stale > 0) meta.staleSkipped += plan.stale;
        if (problems > 0) meta.failClosed += problems;
        if (epoch !== null && meta.epoch === null) meta.epoch = epoch;
      });
    } catch (err) {
      // Memory may be ahead of storage: rebuild it from SQLite on the next call.
      this.memory = undefined;
      this.object.views.reset();
      this.object.meta.reset();
      throw err;
    }
    const position = plan.advancedTo ?? stored;
    if (plan.stale > 0) {
      log.warn(
        {
          component: 'account',
          account: accountId,
          stale: plan.stale,
          position: position && formatPosition(position),
          stale_total: meta.staleSkipped,
        },
        'skipped changes at or below the applied position',
      );
    }
    this.freshTokens.settle(memory.state, meta.position);
    // The batch is stored whatever happens while pushing it: a failed push is redone (push()).
    if (await this.push(memory, dirty, now)) await this.rescheduleAlarm(memory);
    return { ok: true, applied: plan.apply.length, skipped: plan.stale + plan.seen, position: position && formatPosition(position), accountExists: memory.state.account !== null };
  }

  /**
   * POST /v1/accounts/:id/rehydrate (docs/protocol.md#rehydrate-route): reload the account from
   * Postgres, when changes were lost for good (pruned, an invalidated slot) or a new epoch began.
   */
  async rehydrate(accountIdText: string, epoch: string | null = null): Promise<ApplyResult> {
    const accountId = asId<'account'>(accountIdText);
    if (!accountId) return { ok: false, status: 400, error: `not an account id: ${accountIdText}` };
    let memory: AccountMemory;
    try {
      await this.ready(accountId);
      memory = await this.reload(accountId, epoch);
    } catch (err) {
      if (err instanceof DatabaseError) return { ok: false, status: 503, error: err.message };
      throw err;
    }
    const position = this.object.meta.position;
    return { ok: true, applied: 0, skipped: 0, position: position && formatPosition(position), accountExists: memory.state.account !== null };
  }

  /**
   * A consistent snapshot again, and no position: whatever the replicator sends next is either seen
   * by the snapshot (skipped by xid) or applied. No batch runs meanwhile; afterwards every socket
   * gets the difference and every flow is reviewed.
   */
  private async reload(accountId: AccountId, epoch: string | null): Promise<AccountMemory> {
    const flows = this.memory?.flows ?? this.object.flowStore.load();
    await this.ctx.blockConcurrencyWhile(async () => {
      // The old state is not kept beside the new one: if the hydration fails, the next call
      // rebuilds it from the live cache, which a failed hydration leaves as it was.
      this.memory = undefined;
      this.memory = { state: await this.hydrate(accountId, { epoch }), flows };
    });
    const memory = this.memory!;
    this.freshTokens.settle(memory.state, null);
    const dirty = new Dirty();
    dirty.everything = true;
    if (await this.push(memory, dirty, Date.now())) await this.rescheduleAlarm(memory);
    return memory;
  }

  /** GET /v1/{client,gateway}/websocket, routed here by the Worker (docs/protocol.md#websocket-routes). */
  override async fetch(request: Request): Promise<Response> {
    const url = new URL(request.url);
    const kind: DeviceKind = url.pathname.startsWith('/v1/gateway/') ? 'gateway' : 'client';
    if (request.headers.get('upgrade')?.toLowerCase() !== 'websocket') return errorResponse(426, { error: 'expected a WebSocket upgrade' });
    const parsed = parseConnectParams(url);
    if (!parsed.ok) return errorResponse(400, { error: 'invalid parameters', detail: parsed.detail });
    const { params } = parsed;
    const accountId = params.token.accountId;
    const startedAt = Date.now();
    const hydrations = this.hydrations;
    try {
      await this.ready(accountId);
      // docs/protocol.md#websocket-routes: a token the cache lacks may have just been committed.
      const arrival = await this.freshTokens.arrival(accountId, params.token.tokenId, () => this.memory?.state, { startedAt, hydratedSince: this.hydrations > hydrations });
      if (arrival === 'busy') return errorResponse(503, { error: 'too many connects waiting for new tokens', detail: 'retry in a few seconds' });
      if (arrival === 'behind')
        return errorResponse(503, { error: 'token not replicated yet', detail: 'the edge has not received this token from the database yet; retry in a few seconds' });
      let memory = await this.ready(accountId);
      const first = await admit(memory.state, kind, params.token, Date.now());
      if (!first.ok) return errorResponse(401, { error: first.error });
      const device = { externalId: params.external_id, name: params.name, publicKey: params.public_key, version: params.version };
      const owner = first.token.ownerId;
      // Admitted against this very state, with no wait since (else the write path admits again).
      const known = this.memory === memory ? unchangedDevice(memory.state, kind, owner, device) : undefined;
      let cached: Cached;
      let token = first.token;
      let now = Date.now();
      if (known) cached = known;
      else {
        const table = kind === 'client' ? 'clients' : 'gateways';
        const row = await this.devices.upsert(table, { accountId, ownerId: owner, device });
        // The state may have moved while the database answered: admit again against the current one.
        memory = await this.ready(accountId);
        now = Date.now();
        const second = await admit(memory.state, kind, params.token, now);
        if (!second.ok) return errorResponse(401, { error: second.error });
        token = second.token;
        cached = decodeRow(table, row).cached;
      }
      const deviceEnd = acceptDevice(this.object, memory, cached, known === undefined, token.id, request, now);
      if (this.socketCount !== undefined) this.socketCount++;
      // Only this socket's token and, for the first socket, the time windows can bring the alarm forward.
      await this.clock.noLaterThan(earliest(token.expiresAt, nextTimeBoundary(memory.state, now)));
      return new Response(null, { status: 101, webSocket: deviceEnd });
    } catch (err) {
      if (!(err instanceof DatabaseError)) throw err;
      log.warn({ component: 'account', account: accountId, err: err.message }, 'a connect found the database unavailable');
      return errorResponse(503, { error: 'database unavailable, retry later' });
    }
  }

  /** A device frame (docs/protocol.md#frames); nothing it holds can make this throw. */
  override async webSocketMessage(ws: WebSocket, message: string | ArrayBuffer): Promise<void> {
    await onDeviceMessage(this.frames, ws, message);
  }

  override async webSocketClose(ws: WebSocket, code: number, reason: string): Promise<void> {
    this.forget(ws);
    try {
      ws.close(code === 1005 || code === 1006 ? 1000 : code, reason);
    } catch {
      // Already closed.
    }
  }

  override async webSocketError(ws: WebSocket): Promise<void> {
    this.forget(ws);
  }

  private forget(ws: WebSocket): void {
    this.socketCount = undefined;
    const a = attachmentOf(ws);
    if (a) this.frames.limiter.forget(a.conn);
    if (a?.kind === 'client') this.object.views.drop(a.conn);
  }

  private sockets(): number {
    this.socketCount ??= this.ctx.getWebSockets().length;
    return this.socketCount;
  }

  /**
   * The clock's changes (alarms run at least once; this is idempotent): time windows that open or
   * close, tokens and flows that expire, and retries of the flow log.
   */
  override async alarm(): Promise<void> {
    this.clock.fired();
    const memory = await this.readyStored();
    if (!memory) return;
    this.sweepViews();
    const now = Date.now();
    const pushed = await this.push(memory, dueAt(memory.state, memory.flows, now), now);
    // Only once their sockets are closed and their flows revoked (a failed push is redone from them).
    if (pushed) this.evictExpiredTokens(memory, now);
    if (this.object.flowStore.logBacklog > 0) await this.flowLog.flush();
    await this.flowLog.retainIfDue(false);
    if (pushed) await this.rescheduleAlarm(memory);
  }

  /** Drops the digests of connections that closed while no instance ran (docs/architecture.md#9-hibernation-safe), once an instance. */
  private sweepViews(): void {
    if (!this.viewsToSweep) return;
    const live = new Set(this.ctx.getWebSockets().map((ws) => attachmentOf(ws)?.conn ?? -1));
    try {
      this.ctx.storage.transactionSync(() => this.object.views.retain(live));
      this.viewsToSweep = false;
    } catch (err) {
      // Memory may be ahead of storage: read it again; the alarm or the next instance sweeps again.
      this.object.views.reset();
      log.error({ component: 'account', account: this.object.meta.accountId, err: String(err) }, 'dropping stale view digests failed');
    }
  }

  /**
   * propagate(), with a pending resync folded in (workers/account/resync.ts). If it throws, memory
   * may be ahead of storage (its storage transaction rolled back): memory is rebuilt from SQLite
   * on the next call, what the push was to do is stored, and an alarm redoes it (at once, then
   * with backoff). Returns whether the push succeeded.
   */
  private async push(memory: AccountMemory, dirty: Dirty, nowMs: number): Promise<boolean> {
    const { meta, views } = this.object;
    const pending = foldPendingResync(meta.resync, dirty);
    try {
      if (propagate(this.object, memory, dirty, nowMs)) this.socketCount = undefined;
    } catch (err) {
      this.memory = undefined;
      views.reset();
      meta.reset();
      meta.resync = resyncOf(dirty);
      this.pushFailures++;
      const retryMs = resyncDelayMs(this.pushFailures);
      log.error(
        { component: 'account', account: memory.state.accountId, failures: this.pushFailures, retry_ms: retryMs, err: String(err) },
        'pushing a stored batch failed; resyncing every socket',
      );
      await this.clock.noLaterThan(Date.now() + retryMs);
      return false;
    }
    this.pushFailures = 0;
    if (pending) meta.resync = null;
    return true;
  }

  /**
   * Expired tokens leave memory and SQLite once the alarm has closed their sockets and revoked
   * their flows (docs/architecture.md#11-bounded); a later change of the row brings one back.
   */
  private evictExpiredTokens(memory: AccountMemory, now: number): void {
    const expired = expiredTokens(memory.state, now);
    if (expired.length === 0) return;
    this.ctx.storage.transactionSync(() => {
      for (const record of expired) this.object.caches.delete({ table: 'tokens', record });
    });
    for (const record of expired) memory.state.remove({ table: 'tokens', record });
  }

  /** Sets the alarm to the next instant the clock changes something (a full recompute). */
  private async rescheduleAlarm(memory: AccountMemory): Promise<void> {
    const wake = { devicesConnected: this.sockets() > 0, flowLogRetryAt: this.flowLog.dueAt, flowRetentionAt: this.flowLog.retentionAt };
    await this.clock.exactly(nextWake(memory.state, memory.flows, Date.now(), wake));
  }
}
