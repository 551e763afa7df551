import { AccountState } from '../../../src/access/account-state.ts';
import { applyChange } from '../../../src/access/apply-change.ts';
import { Dirty } from '../../../src/access/dirty.ts';
import { softDeleteAware, type Change } from '../../../src/change.ts';
import type { AccountId } from '../../../src/ids.ts';
import type { Row } from '../../../src/json.ts';
import { formatLsn } from '../../../src/lsn.ts';
import type { TableName } from '../../../src/tables.ts';

let counter = 0;
export const uuid = (): string => {
  counter++;
  return `00000000-0000-4000-8000-${counter.toString(16).padStart(12, '0')}`;
};

const NOW = '2026-11-22T20:00:00.000000Z';

/** Rows as the replicator sends them (every column), with defaults for what a test does not care about. */
export const rows = {
  account: (id: string, v: Partial<Row> = {}): Row => ({ id, name: 'Acme', slug: `acme-${id}`, disabled_at: null, deleted_at: null, inserted_at: NOW, updated_at: NOW, ...v }),
  actor: (account: string, v: Partial<Row> = {}): Row => ({ id: uuid(), account_id: account, name: 'Ann', type: 'account_user', disabled_at: null, deleted_at: null, ...v }),
  group: (account: string, v: Partial<Row> = {}): Row => ({ id: uuid(), account_id: account, name: 'G', deleted_at: null, ...v }),
  membership: (account: string, actor: unknown, group: unknown): Row => ({ id: uuid(), account_id: account, actor_id: actor as string, group_id: group as string }),
  site: (account: string, v: Partial<Row> = {}): Row => ({ id: uuid(), account_id: account, name: 'HQ', deleted_at: null, ...v }),
  resource: (account: string, v: Partial<Row> = {}): Row => ({
    id: uuid(),
    account_id: account,
    type: 'dns',
    name: 'Wiki',
    address: 'wiki.example.com',
    address_description: null,
    ip_stack: 'dual',
    filters: [],
    deleted_at: null,
    ...v,
  }),
  connection: (account: string, resource: unknown, site: unknown): Row => ({ account_id: account, resource_id: resource as string, site_id: site as string }),
  policy: (account: string, group: unknown, resource: unknown, v: Partial<Row> = {}): Row => ({
    id: uuid(),
    account_id: account,
    actor_group_id: group as string,
    resource_id: resource as string,
    description: null,
    conditions: [],
    disabled_at: null,
    deleted_at: null,
    ...v,
  }),
  client: (account: string, actor: unknown, v: Partial<Row> = {}): Row => ({
    id: uuid(),
    account_id: account,
    actor_id: actor as string,
    external_id: uuid(),
    name: 'laptop',
    public_key: 'pk',
    last_seen_version: '1.4.2',
    verified_at: null,
    deleted_at: null,
    ...v,
  }),
  gateway: (account: string, site: unknown, v: Partial<Row> = {}): Row => ({
    id: uuid(),
    account_id: account,
    site_id: site as string,
    external_id: uuid(),
    name: 'gw',
    public_key: 'gpk',
    last_seen_version: '1.4.2',
    deleted_at: null,
    ...v,
  }),
  token: (account: string, type: 'client' | 'site', owner: unknown, v: Partial<Row> = {}): Row => ({
    id: uuid(),
    account_id: account,
    type,
    actor_id: type === 'client' ? (owner as string) : null,
    site_id: type === 'site' ? (owner as string) : null,
    secret_salt: 's',
    secret_hash: '0'.repeat(64),
    expires_at: null,
    deleted_at: null,
    ...v,
  }),
};

let lsn = 0x1000n;

/** A change at the next position, classified like the replicator does (soft deletes are deletes). */
export function change(table: TableName, op: 'insert' | 'update' | 'delete', old: Row | null, data: Row | null): Change {
  lsn += 0x100n;
  const c = softDeleteAware(table, op, old, data);
  return { lsn: formatLsn(lsn), seq: 0, xid: 1000, table, ...c, committed_at: NOW } as Change;
}

export const insert = (table: TableName, row: Row) => change(table, 'insert', null, row);
export const update = (table: TableName, old: Row, patch: Partial<Row>) => change(table, 'update', old, { ...old, ...patch } as Row);
export const remove = (table: TableName, old: Row) => change(table, 'delete', old, null);

export function stateOf(accountId: string, changes: Change[]): AccountState {
  const state = new AccountState(accountId as AccountId);
  const dirty = new Dirty();
  for (const c of changes) applyChange(state, c, dirty);
  return state;
}
