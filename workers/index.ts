import { Hono } from 'hono';
import { HTTPException } from 'hono/http-exception';
import { errorSummary } from '../src/errors.ts';
import { errorBodyOf, errorHeadersOf, errorResponse } from './http-errors.ts';
import { log } from './log.ts';
import { keepReplicatorsRunning } from './replicator/keep-running.ts';
import { changes } from './routes/changes.ts';
import { websockets } from './routes/websockets.ts';
import { checkedSecretProblems } from './secrets.ts';

export { AccountDO } from './account/account-do.ts';
export { AccountDirectory } from './directory/account-directory.ts';
// @cloudflare/containers wants it exported (its outbound interception, which the replicator does not
// use, but which the Container class sets up when its object wakes with the container running).
export { ContainerProxy } from '@cloudflare/containers';
export { ReplicatorContainer } from './replicator/replicator-container.ts';

/** The routes; tests call `app.request`. The default export adds the cron's handler. */
export const app = new Hono<{ Bindings: Env }>();

// docs/protocol.md#worker-health-and-errors: a Worker that would refuse changes is not healthy.
app.get('/healthz', (c) => {
  const problems = checkedSecretProblems(c.env);
  return problems.length === 0 ? c.json({ ok: true }) : c.json({ ok: false, problems }, 503);
});
app.route('/', changes);
app.route('/', websockets);

app.notFound((c) => errorResponse(404, { error: 'not found', detail: `${c.req.method} ${new URL(c.req.url).pathname}` }));
app.onError((err, c) => {
  if (err instanceof HTTPException) {
    if (err.status >= 500) log.error({ component: 'worker', path: new URL(c.req.url).pathname, status: err.status, err: err.message }, 'request failed');
    return errorResponse(err.status, errorBodyOf(err), errorHeadersOf(err));
  }
  log.error({ component: 'worker', path: new URL(c.req.url).pathname, err: errorSummary(err) }, 'unhandled error');
  return errorResponse(500, { error: 'internal error' });
});

export default {
  fetch: app.fetch,
  // docs/protocol.md#replicator-container: every minute in production, keep the replicator running.
  scheduled(_controller, env, ctx) {
    ctx.waitUntil(keepReplicatorsRunning(env, 'cron'));
  },
} satisfies ExportedHandler<Env>;
