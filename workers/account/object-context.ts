import type { AccountState } from '../../src/access/account-state.ts';
import type { FlowIndex } from '../../src/flows/flow-index.ts';
import type { CacheStore } from './cache-store.ts';
import type { FlowStore } from './flow-store.ts';
import type { MetaStore } from './meta-store.ts';
import type { ViewStore } from './view-store.ts';

/** The account's state in memory (caches and live flows), rebuilt from SQLite after each wake. */
export interface AccountMemory {
  state: AccountState;
  flows: FlowIndex;
}

/** What the object's handlers share: its runtime context (sockets, transactions) and its SQLite stores. */
export interface ObjectContext {
  ctx: DurableObjectState;
  caches: CacheStore;
  meta: MetaStore;
  views: ViewStore;
  flowStore: FlowStore;
}
