// What the replicator's container is (docs/protocol.md#replicator-container): no runtime types, so
// that Node-side tests and tools read the same values.

/** The replicator's health port (docs/protocol.md#replicator-http), the container's `defaultPort`. */
export const REPLICATOR_PORT = 9187;

/**
 * Replicator variables (docs/protocol.md#replicator-configuration) that a Worker var of the same
 * name passes to the container as they are. DATABASE_URL, EDGE_URL, REPLICATOR_SECRET and
 * REPLICATOR_PORT come from their own sources (replicator-env.ts).
 */
export const PASSED_THROUGH = [
  'SLOT_NAME',
  'PUBLICATION_NAME',
  'MAX_UNACKED',
  'CHANGE_LOG_BATCH_SIZE',
  'CHANGE_LOG_WRITERS',
  'CHANGE_LOG_RETENTION_DAYS',
  'FORWARD_BATCH_SIZE',
  'FORWARD_LINGER_MS',
  'FORWARD_CONCURRENCY',
  'FORWARD_TIMEOUT_MS',
  'RETRY_BASE_MS',
  'RETRY_MAX_MS',
  'STATUS_INTERVAL_MS',
  'REPLICATION_TIMEOUT_MS',
  'STALL_ALERT_MS',
  'DRAIN_TIMEOUT_MS',
  'LOG_LEVEL',
] as const;

/**
 * The replicator's container instances (docs/protocol.md#replicator-container): the same image and
 * configuration twice. Postgres streams a slot to one connection: whichever instance gets it is
 * the active replicator, the other waits on "slot is active" as its standby and takes over when
 * the active one's connection ends. `max_instances` in wrangler.toml is their number.
 */
export const REPLICATOR_INSTANCES = ['replicator-a', 'replicator-b'] as const;
