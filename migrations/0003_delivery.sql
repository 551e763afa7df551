-- change_logs becomes the durable outbox (docs/architecture.md#1-no-loss): the replicator confirms
-- a position to Postgres once it is logged here, and feeds an account that is behind from here, in
-- position order from its delivery cursor. Text LSNs do not sort, so every order and comparison
-- goes through the pg_lsn cast, which this index serves.
create index change_logs_account_position_index on change_logs (account_id, (lsn::pg_lsn), seq);
drop index change_logs_account_id_index;

-- When the change committed: a change read back from the log carries it like a live one.
alter table change_logs add column committed_at timestamptz;

-- One row per account: the last position its object answered 2xx for (null: none yet). It may
-- trail what was delivered (a replay is skipped by the object). needs_rehydrate: the account's
-- object must reload its account before it gets more changes (its undelivered rows were pruned up
-- to skip_lsn/skip_seq, or a new epoch began); delivery then resumes after max(cursor, skip).
create table delivery_cursors (
  account_id uuid primary key,
  lsn pg_lsn,
  seq integer,
  needs_rehydrate boolean not null default false,
  skip_lsn pg_lsn,
  skip_seq integer,
  updated_at timestamptz not null default now()
);

-- Which stream the log and the cursors belong to (docs/architecture.md#12-epochs): a slot of a
-- cluster (system identifier) on a timeline. A stream that cannot continue the previous one starts
-- a new epoch; objects learn it from the batches and re-hydrate.
create table replication_epochs (
  slot_name text primary key,
  epoch text not null,
  epoch_number integer not null,
  system_identifier text not null,
  timeline integer not null,
  started_at timestamptz not null default now()
);

-- Before this migration, a change was acknowledged only once delivered to its account, so what is
-- logged was delivered: every account starts with its cursor at its newest logged change.
insert into delivery_cursors (account_id, lsn, seq)
select distinct on (account_id) account_id, lsn::pg_lsn, seq
from change_logs order by account_id, lsn::pg_lsn desc, seq desc;
