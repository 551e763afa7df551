import type { Sql } from 'postgres';
import { createAccount, type WorldAccount, type WorldResource } from './e2e-world.ts';

type Account = WorldAccount & { extra: WorldResource[] };

/** Row changes committed, per account and table: what change_logs must hold once everything is delivered. */
export class ChangeCount {
  readonly committed = new Map<string, number>();
  /** Transactions whose commit failed without an answer: they may or may not have committed. */
  readonly uncertain = new Map<string, number>();

  add(target: Map<string, number>, accountId: string, table: string, n = 1): void {
    const key = `${accountId}/${table}`;
    target.set(key, (target.get(key) ?? 0) + n);
  }
}

/**
 * A stream of small transactions over a few accounts, the kind of traffic an admin UI makes:
 * renames and address changes, policies disabled and enabled or moved to another resource and
 * back, memberships removed and added. Deterministic for a seed; counts the row changes it
 * committed, so that a test can check that change_logs holds every one of them.
 */
export class Workload {
  readonly counts = new ChangeCount();
  commits = 0;
  failures = 0;
  private readonly member = new Map<string, boolean>();
  private readonly policyOn = new Map<string, string>();
  private readonly disabled = new Set<string>();

  private constructor(
    private readonly sql: Sql,
    readonly accounts: Account[],
  ) {
    for (const a of accounts) {
      this.member.set(a.id, true);
      for (const r of a.resources) this.policyOn.set(r.policyId, r.id);
    }
  }

  static async create(sql: Sql, accounts: number, resources = 6, unreachable = 3): Promise<Workload> {
    const created: Account[] = [];
    for (let i = 0; i < accounts; i++) created.push(await createAccount(sql, { resources, unreachable, label: `load${i}` }));
    const w = new Workload(sql, created);
    for (const a of created) {
      const c = w.counts.committed;
      w.counts.add(c, a.id, 'accounts');
      w.counts.add(c, a.id, 'actors');
      w.counts.add(c, a.id, 'actor_groups');
      w.counts.add(c, a.id, 'actor_group_memberships');
      w.counts.add(c, a.id, 'sites');
      w.counts.add(c, a.id, 'resources', resources + unreachable);
      w.counts.add(c, a.id, 'resource_connections', resources + unreachable);
      w.counts.add(c, a.id, 'policies', resources);
      w.counts.add(c, a.id, 'tokens', 2);
    }
    return w;
  }

  /** One transaction, chosen by `i`. */
  async step(i: number): Promise<void> {
    const a = this.accounts[i % this.accounts.length]!;
    const r = a.resources[(i >> 1) % a.resources.length]!;
    const kind = (i >> 2) % 5;
    const changes: [string, number][] = [];
    const run = async () => {
      switch (kind) {
        case 0:
          await this.sql`update resources set name = ${`${r.name}#${i}`} where id = ${r.id}`;
          changes.push(['resources', 1]);
          break;
        case 1: {
          const off = this.disabled.has(r.policyId);
          await this.sql`update policies set disabled_at = ${off ? null : new Date()} where id = ${r.policyId}`;
          if (off) this.disabled.delete(r.policyId);
          else this.disabled.add(r.policyId);
          changes.push(['policies', 1]);
          break;
        }
        case 2: {
          const target = this.policyOn.get(r.policyId) === r.id ? a.extra[i % a.extra.length]!.id : r.id;
          await this.sql`update policies set resource_id = ${target} where id = ${r.policyId}`;
          this.policyOn.set(r.policyId, target);
          changes.push(['policies', 1]);
          break;
        }
        case 3:
          if (this.member.get(a.id)) await this.sql`delete from actor_group_memberships where actor_id = ${a.actorId}`;
          else await this.sql`insert into actor_group_memberships (account_id, actor_id, group_id) values (${a.id}, ${a.actorId}, ${a.groupId})`;
          this.member.set(a.id, !this.member.get(a.id));
          changes.push(['actor_group_memberships', 1]);
          break;
        default:
          // Two tables in one transaction.
          await this.sql.begin(async (tx) => {
            await tx`update resources set address = ${`h${i}.example.internal`}, type = 'dns' where id = ${r.id}`;
            await tx`update policies set description = ${`step ${i}`} where id = ${r.policyId}`;
          });
          changes.push(['resources', 1], ['policies', 1]);
      }
    };
    try {
      await run();
      this.commits++;
      for (const [table, n] of changes) this.counts.add(this.counts.committed, a.id, table, n);
    } catch (err) {
      this.failures++;
      // The statement may have failed before or after its commit: the caller decides whether that matters.
      const planned: [string, number][] =
        kind === 4
          ? [
              ['resources', 1],
              ['policies', 1],
            ]
          : [[['resources', 'policies', 'policies', 'actor_group_memberships'][kind]!, 1]];
      for (const [table, n] of planned) this.counts.add(this.counts.uncertain, a.id, table, n);
      throw err;
    }
  }

  /**
   * Commits transactions at about `perSecond` until `ms` have passed. With `tolerateErrors`, a
   * failed transaction (the server restarting) is counted and the stream carries on.
   */
  async run(ms: number, perSecond: number, options: { tolerateErrors?: boolean; from?: number } = {}): Promise<number> {
    const start = Date.now();
    let i = options.from ?? 0;
    while (Date.now() - start < ms) {
      const due = start + ((i - (options.from ?? 0)) * 1000) / perSecond;
      if (due > Date.now()) await new Promise((r) => setTimeout(r, due - Date.now()));
      try {
        await this.step(i);
      } catch (err) {
        if (!options.tolerateErrors) throw err;
        await new Promise((r) => setTimeout(r, 100));
      }
      i++;
    }
    return i;
  }

  /** change_logs rows per account/table, for the workload's accounts. */
  async logged(): Promise<Map<string, number>> {
    const rows = await this.sql<{ key: string; n: number }[]>`
      select account_id::text || '/' || table_name as key, count(*)::int as n from change_logs
      where account_id in ${this.sql(this.accounts.map((a) => a.id))} and table_name <> 'clients' and table_name <> 'gateways'
      group by 1`;
    return new Map(rows.map((r) => [r.key, r.n]));
  }
}
