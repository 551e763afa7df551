import type { AccountState } from '../../src/access/account-state.ts';
import type { FlowIndex } from '../../src/flows/flow-index.ts';
import type { CacheStore } from './cache-store.ts';
import type { FlowStore } from './flow-store.ts';
import type { MetaStore } from './meta-store.ts';
import type { ViewStore } from './view-store.ts';

/** The account's state in memory, rebuilt from SQLite after each wake. */
export interface Model {
  state: AccountState;
  flows: FlowIndex;
}

/** What the object's handlers share: its runtime context and its stores. */
export interface Parts {
  ctx: DurableObjectState;
  env: Env;
  caches: CacheStore;
  meta: MetaStore;
  views: ViewStore;
  flowStore: FlowStore;
}
