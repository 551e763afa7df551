-- The domain schema of docs/protocol.md#schema. Every published table has REPLICA IDENTITY FULL so
-- that each change carries the whole old row (docs/architecture.md#5-fat-typed-changes).

create table accounts (
  id uuid primary key default gen_random_uuid(),
  name text not null,
  slug text not null unique,
  disabled_at timestamptz,
  deleted_at timestamptz,
  inserted_at timestamptz not null default now(),
  updated_at timestamptz not null default now()
);

create table actors (
  id uuid primary key default gen_random_uuid(),
  account_id uuid not null references accounts (id) on delete cascade,
  name text not null,
  type text not null check (type in ('account_user', 'account_admin_user', 'service_account')),
  disabled_at timestamptz,
  deleted_at timestamptz,
  inserted_at timestamptz not null default now(),
  updated_at timestamptz not null default now()
);
create index actors_account_id_index on actors (account_id);

create table actor_groups (
  id uuid primary key default gen_random_uuid(),
  account_id uuid not null references accounts (id) on delete cascade,
  name text not null,
  deleted_at timestamptz,
  inserted_at timestamptz not null default now(),
  updated_at timestamptz not null default now()
);
create index actor_groups_account_id_index on actor_groups (account_id);

create table actor_group_memberships (
  id uuid primary key default gen_random_uuid(),
  account_id uuid not null references accounts (id) on delete cascade,
  actor_id uuid not null references actors (id) on delete cascade,
  group_id uuid not null references actor_groups (id) on delete cascade,
  inserted_at timestamptz not null default now(),
  updated_at timestamptz not null default now(),
  unique (actor_id, group_id)
);
create index actor_group_memberships_account_id_index on actor_group_memberships (account_id);
create index actor_group_memberships_group_id_index on actor_group_memberships (group_id);

create table sites (
  id uuid primary key default gen_random_uuid(),
  account_id uuid not null references accounts (id) on delete cascade,
  name text not null,
  deleted_at timestamptz,
  inserted_at timestamptz not null default now(),
  updated_at timestamptz not null default now()
);
create index sites_account_id_index on sites (account_id);

create table gateways (
  id uuid primary key default gen_random_uuid(),
  account_id uuid not null references accounts (id) on delete cascade,
  site_id uuid not null references sites (id) on delete cascade,
  external_id text not null,
  name text not null,
  public_key text not null,
  last_seen_version text,
  deleted_at timestamptz,
  inserted_at timestamptz not null default now(),
  updated_at timestamptz not null default now(),
  unique (site_id, external_id)
);
create index gateways_account_id_index on gateways (account_id);

create table resources (
  id uuid primary key default gen_random_uuid(),
  account_id uuid not null references accounts (id) on delete cascade,
  type text not null check (type in ('dns', 'ip', 'cidr', 'internet')),
  name text not null,
  address text,
  address_description text,
  ip_stack text check (ip_stack in ('dual', 'ipv4_only', 'ipv6_only')),
  filters jsonb not null default '[]',
  deleted_at timestamptz,
  inserted_at timestamptz not null default now(),
  updated_at timestamptz not null default now()
);
create index resources_account_id_index on resources (account_id);

create table resource_connections (
  resource_id uuid not null references resources (id) on delete cascade,
  site_id uuid not null references sites (id) on delete cascade,
  account_id uuid not null references accounts (id) on delete cascade,
  inserted_at timestamptz not null default now(),
  updated_at timestamptz not null default now(),
  primary key (resource_id, site_id)
);
create index resource_connections_account_id_index on resource_connections (account_id);

create table policies (
  id uuid primary key default gen_random_uuid(),
  account_id uuid not null references accounts (id) on delete cascade,
  actor_group_id uuid not null references actor_groups (id) on delete cascade,
  resource_id uuid not null references resources (id) on delete cascade,
  description text,
  conditions jsonb not null default '[]',
  disabled_at timestamptz,
  deleted_at timestamptz,
  inserted_at timestamptz not null default now(),
  updated_at timestamptz not null default now()
);
create index policies_account_id_index on policies (account_id);

create table clients (
  id uuid primary key default gen_random_uuid(),
  account_id uuid not null references accounts (id) on delete cascade,
  actor_id uuid not null references actors (id) on delete cascade,
  external_id text not null,
  name text not null,
  public_key text not null,
  last_seen_version text,
  verified_at timestamptz,
  deleted_at timestamptz,
  inserted_at timestamptz not null default now(),
  updated_at timestamptz not null default now(),
  unique (actor_id, external_id)
);
create index clients_account_id_index on clients (account_id);

create table tokens (
  id uuid primary key default gen_random_uuid(),
  account_id uuid not null references accounts (id) on delete cascade,
  type text not null check (type in ('client', 'site')),
  actor_id uuid references actors (id) on delete cascade,
  site_id uuid references sites (id) on delete cascade,
  secret_salt text not null,
  secret_hash text not null,
  expires_at timestamptz,
  deleted_at timestamptz,
  inserted_at timestamptz not null default now(),
  updated_at timestamptz not null default now(),
  check ((type = 'client' and actor_id is not null) or (type = 'site' and site_id is not null))
);
create index tokens_account_id_index on tokens (account_id);

-- Written by the edge as an audit log; not published and without foreign keys, so that appending
-- never waits on, or fails because of, the rows it mentions.
create table flows (
  id uuid primary key default gen_random_uuid(),
  account_id uuid not null,
  client_id uuid not null,
  gateway_id uuid not null,
  resource_id uuid not null,
  policy_id uuid not null,
  token_id uuid not null,
  expires_at timestamptz,
  inserted_at timestamptz not null default now(),
  updated_at timestamptz not null default now()
);
create index flows_account_id_index on flows (account_id, inserted_at);

-- Every change the replicator delivered, keyed by its position; not published.
create table change_logs (
  id bigserial primary key,
  account_id uuid not null,
  lsn text not null,
  seq integer not null,
  xid bigint,
  table_name text not null,
  op text not null,
  old_data jsonb,
  data jsonb,
  vsn integer not null,
  inserted_at timestamptz not null default now(),
  updated_at timestamptz not null default now(),
  unique (lsn, seq)
);
create index change_logs_account_id_index on change_logs (account_id);
create index change_logs_inserted_at_index on change_logs (inserted_at);

alter table accounts replica identity full;
alter table actors replica identity full;
alter table actor_groups replica identity full;
alter table actor_group_memberships replica identity full;
alter table sites replica identity full;
alter table gateways replica identity full;
alter table resources replica identity full;
alter table resource_connections replica identity full;
alter table policies replica identity full;
alter table clients replica identity full;
alter table tokens replica identity full;
