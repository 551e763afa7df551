import { errorSummary } from '../../src/errors.ts';
import { log } from '../log.ts';
import { REPLICATOR_INSTANCES } from './replicator-shape.ts';

/**
 * The cron's work (`[env.production.triggers]`, every minute): make sure each instance runs, and
 * check its health. A Worker without the REPLICATOR binding (local runs, tests) has none to run.
 */
export async function keepReplicatorsRunning(env: Env, trigger: string): Promise<void> {
  const namespace = env.REPLICATOR;
  if (!namespace) return;
  const results = await Promise.allSettled(REPLICATOR_INSTANCES.map((name) => namespace.getByName(name).ensureRunning(trigger)));
  results.forEach((result, i) => {
    const instance = REPLICATOR_INSTANCES[i] as string;
    if (result.status === 'rejected') {
      log.error({ component: 'replicator-container', instance, trigger, err: errorSummary(result.reason) }, 'could not reach the replicator container');
      return;
    }
    const { status, problems, health } = result.value;
    const fields = { component: 'replicator-container', instance, trigger, status, problems, health: health === undefined ? undefined : JSON.stringify(health) };
    if (status === 'healthy' || status === 'started' || status === 'waiting') log.info(fields, 'replicator checked');
    else log.error(fields, 'replicator not healthy');
  });
}
