// Bindings that wrangler.toml does not declare, so that `wrangler types` cannot list them
// (docs/protocol.md#worker-configuration): the secret, and the variables of local runs.
declare namespace Cloudflare {
  interface Env {
    /** `wrangler secret put REPLICATOR_SECRET`; local runs: `.dev.vars` or `--var`. */
    REPLICATOR_SECRET?: string;
    /** `"local"` in local runs only; absent in a deployed Worker. */
    EDGEPLANE_ENV?: string;
    /** `"off"` turns the connect rate limits off, in a local run only. */
    RATE_LIMITS?: string;
  }
}
