-- docs/protocol.md#schema, Limits: named CHECK constraints, so that a write over a limit fails at once in
-- Postgres with the constraint's name, instead of reaching the edge as a row it cannot store.
-- NOT VALID checks every new and updated row without scanning existing ones; the block at the end
-- then validates each constraint and, where old rows break it, warns (naming it) instead of failing
-- the migration: those rows keep working and fail closed at the edge.

create function edgeplane_json_entries_ok(value jsonb, max_entries integer) returns boolean
  language sql immutable parallel safe
  return value is null or (jsonb_typeof(value) = 'array' and jsonb_array_length(value) <= max_entries);

-- A policy's conditions: at most 64, each with at most 64 values.
create function edgeplane_conditions_ok(conditions jsonb) returns boolean
  language sql immutable parallel safe
  begin atomic
    select edgeplane_json_entries_ok(conditions, 64)
      and not exists (
        select 1 from jsonb_array_elements(case when jsonb_typeof(conditions) = 'array' then conditions else '[]' end) c
        where jsonb_typeof(c -> 'values') = 'array' and jsonb_array_length(c -> 'values') > 64);
  end;

alter table accounts
  add constraint accounts_name_length check (char_length(name) <= 255) not valid,
  add constraint accounts_slug_length check (char_length(slug) <= 255) not valid;
alter table actors add constraint actors_name_length check (char_length(name) <= 255) not valid;
alter table actor_groups add constraint actor_groups_name_length check (char_length(name) <= 255) not valid;
alter table sites add constraint sites_name_length check (char_length(name) <= 255) not valid;
alter table gateways
  add constraint gateways_external_id_length check (char_length(external_id) <= 255) not valid,
  add constraint gateways_name_length check (char_length(name) <= 255) not valid,
  add constraint gateways_last_seen_version_length check (char_length(last_seen_version) <= 255) not valid,
  add constraint gateways_public_key_length check (char_length(public_key) <= 256) not valid;
alter table resources
  add constraint resources_name_length check (char_length(name) <= 255) not valid,
  add constraint resources_address_length check (char_length(address) <= 1024) not valid,
  add constraint resources_address_description_length check (char_length(address_description) <= 1024) not valid,
  add constraint resources_filters_entries check (edgeplane_json_entries_ok(filters, 64)) not valid;
alter table policies
  add constraint policies_description_length check (char_length(description) <= 1024) not valid,
  add constraint policies_conditions_entries check (edgeplane_conditions_ok(conditions)) not valid;
alter table clients
  add constraint clients_external_id_length check (char_length(external_id) <= 255) not valid,
  add constraint clients_name_length check (char_length(name) <= 255) not valid,
  add constraint clients_last_seen_version_length check (char_length(last_seen_version) <= 255) not valid,
  add constraint clients_public_key_length check (char_length(public_key) <= 256) not valid;

do $$
declare
  c record;
begin
  for c in
    select conrelid::regclass as tbl, conname from pg_constraint
    where not convalidated and contype = 'c' and connamespace = 'public'::regnamespace
  loop
    begin
      execute format('alter table %s validate constraint %I', c.tbl, c.conname);
    exception when check_violation then
      raise warning 'existing rows of % break the limit %: they stay, new writes are checked', c.tbl, c.conname;
    end;
  end loop;
end
$$;
