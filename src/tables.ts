/** The domain tables the replicator publishes, in the order a hydration loads them. */
export const DOMAIN_TABLES = [
  'accounts',
  'actors',
  'actor_groups',
  'actor_group_memberships',
  'sites',
  'gateways',
  'resources',
  'resource_connections',
  'policies',
  'clients',
  'tokens',
] as const;

export type TableName = (typeof DOMAIN_TABLES)[number];

const domainTables: ReadonlySet<string> = new Set(DOMAIN_TABLES);

export function isDomainTable(name: string): name is TableName {
  return domainTables.has(name);
}

/** Tables whose rows are removed by setting `deleted_at` rather than by DELETE. */
export const SOFT_DELETE_TABLES: ReadonlySet<TableName> = new Set<TableName>([
  'accounts',
  'actors',
  'actor_groups',
  'sites',
  'gateways',
  'resources',
  'policies',
  'clients',
  'tokens',
]);
