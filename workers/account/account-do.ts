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
import { formatPosition, parsePosition, type Position } from '../../src/lsn.ts';
import { planBatch } from '../../src/ordering.ts';
import { decodeRow, type Cached, type RowDecodeError } from '../../src/records.ts';
import { unchangedDevice } from '../../src/devices.ts';
import { parseConnectParams, type DeviceKind } from '../connect-params.ts';
import { errorSummary } from '../../src/errors.ts';
import { errorResponse } from '../http-errors.ts';
import { log } from '../log.ts';
import { CacheStaging } from './cache-staging.ts';
import { CacheStore } from './cache-store.ts';
import { CACHE_SCHEMA_VERSION } from './cache-tables.ts';
import { acceptDevice, admit } from './connect.ts';
import { Database, DatabaseError } from './database.ts';
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
import { readRelayConfig, type RelayConfig } from './relay-config.ts';
import type { RelayCount } from './relay-leases.ts';
import { isRelayName } from './relay-placement.ts';
import { atOrBefore, RelayStore, type CatchUp, type RelayAck, type RelayBatch, type RelayCalls, type RelayJoin } from './relay-store.ts';
import { RELAY_LEASE_CONNECTS, RELAY_SOCKETS_HEADER, RelayAdoptionError, RelayWriter, relayCall, relayStub, socketsHeader, writerStub } from './relay-writer.ts';
import { foldPendingResync, resyncDelayMs, resyncOf } from './resync.ts';
import type { FlowHandoff, HandoffResult, RemoteGateway } from './remote-gateways.ts';
import { attachmentOf, send, tags } from './sockets.ts';
import { ViewStore } from './view-store.ts';

/** `accountExists`: the object holds its account row (any state but deleted) afterwards; the Worker tells the directory. */
export type ApplyResult = { ok: true; applied: number; skipped: number; position: string | null; accountExists: boolean } | { ok: false; status: 400 | 503; error: string };

/** Batches a relay asks the writer for at once while catching up. */
const RELAY_CATCH_UP_BATCHES = 64;
/** How long a relay gathers closes before it tells the writer its socket count. */
const RELAY_REPORT_DELAY_MS = 1_000;

/** A call between an account's objects that names another account, or an object of another role. */
export class RelayRoleError extends Error {
  override name = 'RelayRoleError';
}

/**
 * After a first hydration found the database unavailable (or stalled), how long the object
 * answers its batches and connects with that failure instead of trying again: every retry of a
 * stalled read would leave one more statement waiting in Postgres, and each waiting event would
 * wait out a stall of its own before its turn.
 */
const HYDRATION_RETRY_MS = 1_000;

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
  private readonly db: Database;
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
  /** docs/architecture.md#relays: the writer's relays and batch log, or a relay's role and stream. */
  private readonly relays: RelayStore;
  private readonly relayConfig: RelayConfig;
  /** The writer's side of relays: placement and forwarding. */
  private readonly relayWriter: RelayWriter;
  private socketReport: ReturnType<typeof setTimeout> | undefined;
  /** The last first hydration that found the database unavailable, answered again for HYDRATION_RETRY_MS. */
  private hydrationFailure: { at: number; err: DatabaseError } | undefined;
  /** Whether this instance has yet to drop the view digests of connections that closed while no instance ran (see ready). */
  private viewsToSweep = false;
  /** A relay that retired: its storage is gone and its instance is about to reset; it serves nothing meanwhile. */
  private retired = false;

  constructor(ctx: DurableObjectState, env: Env) {
    super(ctx, env);
    const sql = ctx.storage.sql;
    this.object = { ctx, caches: new CacheStore(sql), meta: new MetaStore(sql), views: new ViewStore(sql), flowStore: new FlowStore(sql) };
    this.clock = new AlarmClock(ctx.storage);
    this.relays = new RelayStore(sql);
    const settings = env as unknown as Record<string, unknown>;
    this.relayConfig = readRelayConfig(settings);
    this.relayWriter = new RelayWriter({
      ctx,
      relays: this.relays,
      config: this.relayConfig,
      meta: this.object.meta,
      clock: this.clock,
      sockets: () => this.sockets(),
      relay: (name) => this.relayStub(name),
    });
    const limits = readFlowLimits(settings);
    const db = new Database(env.DB, settings);
    this.db = db;
    this.flowLog = new FlowLogWriter(
      this.object.flowStore,
      db,
      ctx,
      () => this.object.meta.accountId,
      (at) => this.clock.noLaterThan(at),
      async () => {
        if (this.memory) await this.rescheduleAlarm(this.memory);
      },
      limits.retentionMs,
    );
    this.freshTokens = new FreshTokens(db);
    this.devices = new DeviceWriter(db);
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
      remote: {
        gateways: () => {
          const self = this.relays.relayOf?.name ?? '';
          return this.relays.presence.filter((g) => g.holder !== self);
        },
        handOff: async (holder, handoff) => {
          const accountId = this.object.meta.accountId!;
          const stub = holder === '' ? writerStub(this.env, accountId) : this.relayStub(holder);
          return await stub.takeFlow(accountId, handoff);
        },
      },
    };
    // Answered by the runtime without waking the object.
    ctx.setWebSocketAutoResponse(new WebSocketRequestResponsePair('ping', 'pong'));
  }

  /** The account's state, hydrating from Postgres first when the object has none (or an older cache). */
  private async ready(accountId: AccountId): Promise<AccountMemory> {
    if (this.retired) throw new RelayRoleError(`this relay of account ${accountId} retired a moment ago`);
    if (this.memory) return this.memory;
    const owner = this.object.meta.accountId;
    if (owner !== null && owner !== accountId) throw new Error(`object of account ${owner} asked to serve account ${accountId}`);
    const relay = this.relays.relayOf;
    if (relay && relay.accountId !== accountId) throw new RelayRoleError(`relay ${relay.name} asked to serve account ${accountId}`);
    // An object named as a relay that holds no relay role (never adopted, or its storage lost)
    // must not act as the account's writer: no batch would ever reach it.
    if (!relay && isRelayName(this.ctx.id.name)) throw new RelayRoleError(`object ${this.ctx.id.name} is named as a relay but is not one (not adopted)`);
    await this.exclusively(async () => {
      if (this.memory) return;
      const stale = owner === null || this.object.meta.cacheVersion !== CACHE_SCHEMA_VERSION;
      const failed = this.hydrationFailure;
      if (stale && failed && Date.now() - failed.at < HYDRATION_RETRY_MS) throw failed.err;
      let hydrated: AccountState | undefined;
      try {
        hydrated = stale ? await this.hydrate(accountId, relay ? await this.joinWriter(accountId) : undefined) : undefined;
      } catch (err) {
        if (err instanceof DatabaseError) this.hydrationFailure = { at: Date.now(), err };
        throw err;
      }
      this.hydrationFailure = undefined;
      this.memory = { state: hydrated ?? this.object.caches.load(accountId), flows: this.object.flowStore.load() };
      if (!relay) await this.relayWriter.resumeForwards(Date.now());
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

  /**
   * Runs `fn` with no other event of the object delivered meanwhile (blockConcurrencyWhile), and
   * hands its failure to the caller as it is: a failure that escapes blockConcurrencyWhile resets
   * the object (its memory, its timers) and reaches the caller as a plain Error, losing the
   * DatabaseError that makes it a 503.
   */
  private async exclusively(fn: () => Promise<void>): Promise<void> {
    let failure: { err: unknown } | undefined;
    await this.ctx.blockConcurrencyWhile(async () => {
      try {
        await fn();
      } catch (err) {
        failure = { err };
      }
    });
    if (failure) throw failure.err;
  }

  private async readyStored(): Promise<AccountMemory | undefined> {
    if (this.memory) return this.memory;
    const accountId = this.object.meta.accountId;
    return accountId === null ? undefined : await this.ready(accountId);
  }

  /**
   * docs/architecture.md#hydration: load the account in one REPEATABLE READ query, with its
   * snapshot, page by page into a staged cache and the returned state. `restart`: also forget the
   * position (a reload), in the epoch given (else the one the snapshot saw); a relay starts at the
   * writer's position and stream instead (docs/architecture.md#relays).
   */
  private async hydrate(accountId: AccountId, restart?: { epoch: string | null; position?: Position | null; stream?: string }): Promise<AccountState> {
    const started = Date.now();
    this.hydrations++;
    const { ctx } = this;
    const { meta } = this.object;
    const staging = new CacheStaging(ctx.storage.sql);
    const state = new AccountState(accountId);
    ctx.storage.transactionSync(() => staging.begin());
    const h = await hydrate(this.db, accountId, (records) => {
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
        if (restart) meta.position = restart.position ?? null;
        // A writer's new snapshot begins a new stream for its relays; a relay follows the one it joined.
        if (this.relays.relayOf) this.relays.stream = restart?.stream ?? null;
        else this.relays.restart(crypto.randomUUID());
      });
    } catch (err) {
      meta.reset();
      this.relays.reset();
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
    if (this.relays.relayOf) return { ok: false, status: 400, error: 'a relay takes batches from its writer only' };
    const stored = await this.store(accountIdText, changes, epoch);
    if (stored.forward) await this.relayWriter.forward(stored.forward);
    return stored.result;
  }

  /**
   * applyChanges' storing and pushing, shared by the writer and its relays. `follow`: a relay's
   * batch from the writer, applied only right after the relay's position (else a gap: the relay
   * catches up first), which moves the position to the writer's.
   */
  private async store(
    accountIdText: string,
    changes: Change[],
    epoch: string | null,
    follow?: { after: Position | null; position: Position | null },
  ): Promise<{ result: ApplyResult; forward?: Omit<RelayBatch, 'stream'>; gap?: boolean }> {
    const accountId = asId<'account'>(accountIdText);
    if (!accountId) return { result: { ok: false, status: 400, error: `not an account id: ${accountIdText}` } };
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
      if (err instanceof DatabaseError) return { result: { ok: false, status: 503, error: err.message } };
      throw err;
    }
    const now = Date.now();
    const { meta, caches } = this.object;
    const stored = meta.position;
    if (follow) {
      const ack = { ok: true as const, applied: 0, skipped: changes.length, position: stored && formatPosition(stored), accountExists: memory.state.account !== null };
      if (atOrBefore(follow.position, stored)) return { result: ack };
      if (!samePosition(follow.after, stored)) return { result: ack, gap: true };
    }
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
        if (follow) meta.position = follow.position;
        // In the batch's own transaction: a relay that misses the forward finds it in the log.
        else if (plan.advancedTo && this.relays.peers().size > 0) this.relays.append(stored, plan.advancedTo, plan.apply, this.relayConfig.logMaxBatches);
      });
    } catch (err) {
      // Memory may be ahead of storage: rebuild it from SQLite on the next call.
      this.memory = undefined;
      this.object.views.reset();
      this.object.meta.reset();
      this.relays.reset();
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
    const result: ApplyResult = {
      ok: true,
      applied: plan.apply.length,
      skipped: plan.stale + plan.seen,
      position: position && formatPosition(position),
      accountExists: memory.state.account !== null,
    };
    const forward =
      !follow && plan.advancedTo && this.relays.peers().size > 0
        ? { after: stored && formatPosition(stored), position: formatPosition(plan.advancedTo), changes: plan.apply }
        : undefined;
    return { result, forward };
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
    await this.exclusively(async () => {
      // The old state is not kept beside the new one: if the hydration fails, the next call
      // rebuilds it from the live cache, which a failed hydration leaves as it was.
      this.memory = undefined;
      const restart = this.relays.relayOf ? await this.joinWriter(accountId) : { epoch };
      this.memory = { state: await this.hydrate(accountId, restart), flows };
    });
    const memory = this.memory!;
    this.freshTokens.settle(memory.state, this.object.meta.position);
    const dirty = new Dirty();
    dirty.everything = true;
    if (await this.push(memory, dirty, Date.now())) await this.rescheduleAlarm(memory);
    // Relays learn of the new stream now, not at the next batch: they re-hydrate too.
    if (!this.relays.relayOf) await this.relayWriter.forward(null);
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
    const relay = this.relays.relayOf;
    // docs/architecture.md#6-isolation: a relay's name holds its account, and it serves no other.
    if (relay && relay.accountId !== accountId) return errorResponse(401, { error: 'invalid token' });
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
      // Admitted before it is placed: a refused token reaches no relay and creates none.
      if (!relay) {
        const home = kind === 'gateway' ? this.relays.gatewayHome(first.token.ownerId, params.external_id) : null;
        const placed = await this.relayWriter.place(accountId, request, home);
        if (placed) return placed;
        memory = await this.ready(accountId);
      }
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
      if (relay && this.relays.idleSince !== null) this.ctx.storage.transactionSync(() => (this.relays.idleSince = null));
      // Every object of the account knows where this gateway is before it is told it is connected.
      if (cached.table === 'gateways')
        await this.gatewayMoved(accountId, { id: cached.record.id, siteId: cached.record.siteId, version: params.version, record: cached.record }, true);
      // Only this socket's token and, for the first socket, the time windows can bring the alarm forward.
      await this.clock.noLaterThan(earliest(token.expiresAt, nextTimeBoundary(memory.state, now)));
      return new Response(null, { status: 101, webSocket: deviceEnd, headers: relay ? { [RELAY_SOCKETS_HEADER]: socketsHeader(this.sockets(), Date.now()) } : undefined });
    } catch (err) {
      if (err instanceof RelayRoleError || err instanceof RelayAdoptionError) {
        log.error({ component: 'relay', account: accountId, err: err.message }, 'a connect found no relay to hold it');
        return errorResponse(503, { error: 'relay unavailable, retry later' });
      }
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
    if (this.relays.relayOf) this.reportSocketsSoon();
    const a = attachmentOf(ws);
    if (a) this.frames.limiter.forget(a.conn);
    if (a?.kind === 'client') this.object.views.drop(a.conn);
    const accountId = this.object.meta.accountId;
    const record = a?.kind === 'gateway' ? this.memory?.state.gateways.get(a.gatewayId) : undefined;
    if (a?.kind === 'gateway' && accountId !== null && !this.ctx.getWebSockets(tags.gateway(a.gatewayId)).some((other) => other !== ws)) {
      const left = record ?? { id: a.gatewayId, siteId: a.siteId, externalId: '', name: '', publicKey: '', version: a.version };
      this.gatewayMoved(accountId, { id: a.gatewayId, siteId: a.siteId, version: a.version, record: left }, false).catch((err: unknown) =>
        log.warn({ component: 'relay', account: accountId, err: errorSummary(err) }, "could not tell the account's objects a gateway left"),
      );
    }
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
    if (!this.relays.relayOf) await this.relayWriter.retryDue(now);
    else if (await this.retireIfIdle(memory, now)) return;
    if (pushed) await this.rescheduleAlarm(memory);
  }

  /**
   * A relay that has held no socket for RELAY_RETIRE_AFTER_MS, and holds no flow and no flow-log
   * row, retires (docs/architecture.md#relays): once the writer forgot it (so that nothing is
   * forwarded to it or placed on it), it drops its storage and its instance resets. No other event
   * runs meanwhile: an adoption that comes after finds the reset instance, and re-hydrates.
   */
  private async retireIfIdle(memory: AccountMemory, now: number): Promise<boolean> {
    const relay = this.relays.relayOf;
    const idle = this.relays.idleSince;
    const at = this.retireAt();
    if (!relay || idle === null || at === null || now < at) return false;
    let retired = false;
    if (this.ctx.getWebSockets().length === 0 && memory.flows.flows.size === 0 && this.object.flowStore.logBacklog === 0) {
      await this.exclusively(async () => {
        retired = await writerStub(this.env, relay.accountId).relayRetire(relay.accountId, relay.name);
        if (!retired) return;
        this.retired = true;
        this.memory = undefined;
        await this.ctx.storage.deleteAlarm();
        await this.ctx.storage.deleteAll();
      });
    }
    // Still holding flows (they expire), or a connect was being placed on it: idle from now on.
    if (!retired) {
      this.ctx.storage.transactionSync(() => (this.relays.idleSince = this.ctx.getWebSockets().length === 0 ? now : null));
      return false;
    }
    log.info({ component: 'relay', account: relay.accountId, relay: relay.name, idle_ms: now - idle }, 'relay retired: its storage dropped');
    // After this alarm's answer: every store's tables are gone, and only a new instance creates them.
    setTimeout(() => this.ctx.abort('relay retired'), 0);
    return true;
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
    await this.clock.exactly(earliest(nextWake(memory.state, memory.flows, Date.now(), wake), this.relays.relayOf ? this.retireAt() : this.relays.retryAt));
  }

  /** A relay that holds no socket: idle from now (unless already), and its alarm set for when it may retire. */
  private async noteIdle(): Promise<void> {
    if (this.retired || this.relays.idleSince !== null) return;
    const now = Date.now();
    this.ctx.storage.transactionSync(() => (this.relays.idleSince = now));
    await this.clock.noLaterThan(this.retireAt());
  }

  /** A relay: when it may retire (idle long enough), if it holds no socket. */
  private retireAt(): number | null {
    const idle = this.relays.idleSince;
    return idle === null ? null : idle + this.relayConfig.retireAfterMs;
  }

  // docs/architecture.md#relays: the calls between an account's objects (placement and forwarding are in relay-writer.ts).

  /** The writer, from a relay that starts following it: its stream, position and epoch now. */
  async relayJoin(accountIdText: string, name: string): Promise<RelayJoin> {
    const accountId = this.writerAccount(accountIdText, name);
    await this.ready(accountId);
    const { meta } = this.object;
    const peer = this.relays.peers().get(name);
    if (!peer) throw new RelayRoleError(`relay ${name} is not one of account ${accountId}'s`);
    this.ctx.storage.transactionSync(() => this.relays.putPeer({ ...peer, acked: meta.position }));
    return { stream: this.relays.stream!, position: meta.position && formatPosition(meta.position), epoch: meta.epoch, gateways: this.relays.presence };
  }

  /** The writer, from a relay behind it: the logged batches after the relay's position (null: re-hydrate). */
  async relayCatchUp(accountIdText: string, name: string, stream: string, since: string | null): Promise<CatchUp> {
    const accountId = this.writerAccount(accountIdText, name);
    await this.ready(accountId);
    if (stream !== this.relays.stream) return null;
    return this.relays.since(since === null ? null : parsePosition(since), this.object.meta.position, RELAY_CATCH_UP_BATCHES);
  }

  /**
   * The writer, from the Worker that followed its placement to a relay: how the relay answered
   * (its socket count after a 101, else null); `connects`: the placements this ends (a lease's).
   */
  async relayPlaced(accountIdText: string, name: string, sockets: RelayCount | null, connects = 1): Promise<void> {
    this.writerAccount(accountIdText, name);
    this.relayWriter.placed(name, sockets, Number.isSafeInteger(connects) && connects > 0 ? Math.min(connects, 1 + RELAY_LEASE_CONNECTS) : 1);
  }

  /** The writer, from a relay that held nothing for a while: whether it may retire (RelayWriter.retire). */
  async relayRetire(accountIdText: string, name: string): Promise<boolean> {
    this.writerAccount(accountIdText, name);
    return this.relayWriter.retire(name);
  }

  /** The writer, from a relay whose sockets closed: its count, for placement. */
  async relaySockets(accountIdText: string, name: string, sockets: RelayCount): Promise<void> {
    this.writerAccount(accountIdText, name);
    this.relayWriter.counted(name, sockets);
  }

  /** Checks a call from a relay: this object is the writer of that account, and the relay is named for it. */
  private writerAccount(accountIdText: string, name: string): AccountId {
    const accountId = asId<'account'>(accountIdText);
    const owner = this.object.meta.accountId;
    if (!accountId || this.relays.relayOf || (owner !== null && owner !== accountId) || !name.startsWith(`${accountId}/relay/`)) {
      throw new RelayRoleError(`a relay call for account ${accountIdText} (relay ${name}) reached an object that is not its writer`);
    }
    return accountId;
  }

  /** A relay, from its writer, before its first device: the account it serves and its own name. */
  async relayAdopt(accountIdText: string, name: string): Promise<void> {
    if (this.retired) throw new RelayRoleError(`relay ${name} retired a moment ago; its next instance can be adopted`);
    const current = this.relays.relayOf;
    const accountId = asId<'account'>(accountIdText);
    const own = this.ctx.id.name;
    if (
      !accountId ||
      !name.startsWith(`${accountId}/relay/`) ||
      (own !== undefined && own !== name) ||
      (current && (current.accountId !== accountId || current.name !== name)) ||
      (!current && this.object.meta.accountId !== null)
    ) {
      throw new RelayRoleError(`object ${current?.name ?? this.object.meta.accountId ?? 'new'} cannot become relay ${name}`);
    }
    if (!current) this.ctx.storage.transactionSync(() => (this.relays.relayOf = { accountId, name }));
  }

  /**
   * A relay, from its writer: a batch right after the relay's position is applied like the
   * writer applied it; one further on means batches were missed, fetched from the writer's log
   * by position first; another stream means the writer re-hydrated, and so does the relay.
   */
  async relayBatch(accountIdText: string, name: string, batch: RelayBatch): Promise<RelayAck> {
    const relay = this.relays.relayOf;
    if (!relay || relay.accountId !== accountIdText || relay.name !== name) return { ok: false, error: `not relay ${name} of account ${accountIdText}` };
    const accountId = relay.accountId as AccountId;
    const position = (p: string | null) => (p === null ? null : parsePosition(p));
    try {
      await this.ready(accountId);
      if (batch.stream !== this.relays.stream) await this.reload(accountId, null);
      let step = await this.store(accountId, batch.changes, null, { after: position(batch.after), position: position(batch.position) });
      while (step.gap) {
        const at = this.object.meta.position;
        const up = await writerStub(this.env, accountId).relayCatchUp(accountId, name, this.relays.stream ?? '', at && formatPosition(at));
        if (up === null) {
          log.warn({ component: 'relay', account: accountId, relay: name }, "the writer's log no longer covers this relay's position: re-hydrating");
          await this.reload(accountId, null);
          break;
        }
        for (const b of up.batches) await this.store(accountId, b.changes, null, { after: position(b.after), position: position(b.position) });
        if (!up.more) step = await this.store(accountId, batch.changes, null, { after: position(batch.after), position: position(batch.position) });
      }
      if (!step.result.ok) return { ok: false, error: step.result.error };
      // Sockets a deploy closed unseen told no close: a relay left with none learns it here.
      if (this.relays.idleSince === null && this.sockets() === 0) await this.noteIdle();
    } catch (err) {
      return { ok: false, error: errorSummary(err) };
    }
    const at = this.object.meta.position;
    return { ok: true, position: at && formatPosition(at) };
  }

  /** A relay, inside its hydration: joins the writer's stream at the writer's position. */
  private async joinWriter(accountId: AccountId): Promise<{ epoch: string | null; position: Position | null; stream: string }> {
    const relay = this.relays.relayOf!;
    const joined = await writerStub(this.env, accountId).relayJoin(accountId, relay.name);
    // Inside the hydration, which reads every gateway upserted before it connected: no row to learn.
    this.ctx.storage.transactionSync(() => (this.relays.presence = joined.gateways));
    return { epoch: joined.epoch, position: joined.position === null ? null : parsePosition(joined.position), stream: joined.stream };
  }

  /** A gateway connected to or left this object: the writer's list changes and reaches every relay. */
  private async gatewayMoved(accountId: string, gateway: Omit<RemoteGateway, 'holder'>, online: boolean): Promise<void> {
    const relay = this.relays.relayOf;
    if (relay) await writerStub(this.env, accountId).gatewayPresence(accountId, relay.name, gateway, online);
    else await this.gatewayPresence(accountId, '', gateway, online);
  }

  /** The writer: a gateway's holder changed; the new list goes to every relay (bounded in time, each). */
  async gatewayPresence(accountIdText: string, holder: string, gateway: Omit<RemoteGateway, 'holder'>, online: boolean): Promise<void> {
    const accountId = this.writerAccount(accountIdText, holder === '' ? `${accountIdText}/relay/` : holder);
    const others = this.relays.presence.filter((g) => !(g.id === gateway.id && g.holder === holder));
    const list = online ? [...others, { ...gateway, holder }] : others;
    const memory = await this.ready(accountId);
    this.ctx.storage.transactionSync(() => {
      this.relays.presence = list;
      if (online) this.relays.setGatewayHome(gateway.siteId, gateway.record.externalId, holder);
      this.learnGateways(memory, list);
    });
    // A gateway's connect waits for this: bounded, and not for a relay out of step (its retry brings it the list).
    const inStep = [...this.relays.peers().values()].filter((p) => p.retryAt === null);
    await Promise.allSettled(inStep.map((p) => relayCall(this.relayStub(p.name).relayPresence(accountId, p.name, list), undefined)));
  }

  /** A relay, from its writer: the account's gateways and their holders. */
  async relayPresence(accountIdText: string, name: string, gateways: RemoteGateway[]): Promise<void> {
    const relay = this.relays.relayOf;
    if (!relay || relay.accountId !== accountIdText || relay.name !== name) throw new RelayRoleError(`not relay ${name} of account ${accountIdText}`);
    const memory = await this.ready(relay.accountId as AccountId);
    this.ctx.storage.transactionSync(() => {
      this.relays.presence = gateways;
      this.learnGateways(memory, gateways);
    });
  }

  /** Gateways online elsewhere that the stream has not brought here yet: cached as their holder cached them. */
  private learnGateways(memory: AccountMemory, gateways: readonly RemoteGateway[]): void {
    for (const g of gateways) {
      if (memory.state.gateways.has(g.id)) continue;
      const cached = { table: 'gateways' as const, record: g.record };
      memory.state.put(cached);
      this.object.caches.put(cached);
    }
  }

  /**
   * The holder of a gateway, from the object of a client that chose it: it owns the flow from now
   * on (authorize_flow, reviews, reject_access, expiry, the flow log) and drops the flows the new
   * one displaced; refused when the gateway is not connected here any more or the flow log is full.
   */
  async takeFlow(accountIdText: string, handoff: FlowHandoff): Promise<HandoffResult> {
    const relay = this.relays.relayOf;
    const owner = relay ? relay.accountId : this.object.meta.accountId;
    if (owner !== accountIdText) throw new RelayRoleError(`a flow of account ${accountIdText} reached an object of account ${owner ?? 'none'}`);
    const memory = await this.ready(accountIdText as AccountId);
    const { flow } = handoff;
    if (flow && this.ctx.getWebSockets(tags.gateway(flow.gatewayId)).length === 0) {
      // A list from before a deploy (no close was seen): this object corrects it for everyone.
      const gone = this.relays.presence.find((g) => g.id === flow.gatewayId && g.holder === (relay?.name ?? ''));
      if (gone) await this.gatewayMoved(accountIdText, gone, false);
      return { ok: false, reason: 'offline' };
    }
    const { logBacklogMax } = this.frames.limits;
    if (flow && this.object.flowStore.logBacklog >= logBacklogMax)
      return { ok: false, reason: 'flow_log_full', detail: `flow log full: ${logBacklogMax} flows wait for the database; retry later` };
    this.ctx.storage.transactionSync(() => {
      for (const id of handoff.drop) this.object.flowStore.delete(id);
      if (handoff.client && !memory.state.clients.has(handoff.client.id)) {
        const client = { table: 'clients' as const, record: handoff.client };
        memory.state.put(client);
        this.object.caches.put(client);
      }
      if (flow) {
        this.object.flowStore.put(flow);
        if (handoff.logRow !== null) this.object.flowStore.enqueueLog(flow.id, handoff.logRow);
      }
    });
    for (const id of handoff.drop) memory.flows.remove(id);
    if (flow) memory.flows.put(flow);
    for (const f of handoff.frames) for (const ws of this.ctx.getWebSockets(tags.gateway(f.gatewayId))) send(ws, f.text);
    if (flow) await this.frames.created(flow);
    return { ok: true };
  }

  private relayStub(name: string): RelayCalls {
    return relayStub(this.env, name);
  }

  /** A relay: tells the writer its socket count once closes settle (many closes, one call). */
  private reportSocketsSoon(): void {
    if (this.socketReport !== undefined) return;
    this.socketReport = setTimeout(() => {
      this.socketReport = undefined;
      if (this.retired) return;
      const relay = this.relays.relayOf!;
      const sockets = this.ctx.getWebSockets().length;
      if (sockets === 0)
        this.noteIdle().catch((err: unknown) =>
          log.warn({ component: 'relay', account: relay.accountId, relay: relay.name, err: errorSummary(err) }, 'could not set the retirement alarm'),
        );
      writerStub(this.env, relay.accountId)
        .relaySockets(relay.accountId, relay.name, { n: sockets, at: Date.now() })
        .catch((err: unknown) => log.warn({ component: 'relay', account: relay.accountId, relay: relay.name, err: errorSummary(err) }, 'could not report sockets to the writer'));
    }, RELAY_REPORT_DELAY_MS);
  }
}

function samePosition(a: Position | null, b: Position | null): boolean {
  return atOrBefore(a, b) && atOrBefore(b, a);
}
