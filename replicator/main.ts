import { loadConfig } from './config.ts';
import { ConfigError } from './errors.ts';
import { startHttpServer } from './http-server.ts';
import { createLogger } from './logger.ts';
import { ReplicatorService } from './service.ts';

let config;
try {
  config = loadConfig(process.env);
} catch (err) {
  if (!(err instanceof ConfigError)) throw err;
  console.error(`edgeplane replicator: ${err.message}`);
  process.exit(2);
}

const log = createLogger(config.LOG_LEVEL);
const service = new ReplicatorService(config, log);
const server = await startHttpServer(service, config.REPLICATOR_PORT);
const address = server.address();
log.info({ port: typeof address === 'object' && address ? address.port : config.REPLICATOR_PORT, edge: config.EDGE_URL, slot: config.SLOT_NAME }, 'replicator started');
service.start();

let stopping = false;
async function shutdown(signal: string): Promise<void> {
  if (stopping) return;
  stopping = true;
  log.info({ signal }, 'stopping: draining in-flight batches');
  await service.stop();
  server.close();
  log.info({}, 'stopped');
  process.exit(0);
}
process.on('SIGTERM', () => void shutdown('SIGTERM'));
process.on('SIGINT', () => void shutdown('SIGINT'));
