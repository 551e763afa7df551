import { createServer, type Server } from 'node:http';
import { errorSummary } from '../src/errors.ts';
import type { ReplicatorService } from './service.ts';

/** `/healthz` (liveness), `/readyz` (streaming), `/metrics` (Prometheus text). */
export function startHttpServer(service: ReplicatorService, port: number): Promise<Server> {
  const server = createServer((req, res) => {
    const path = (req.url ?? '/').split('?')[0];
    if (req.method !== 'GET') {
      res.writeHead(405, { 'content-type': 'application/json' }).end(JSON.stringify({ error: 'method not allowed' }));
      return;
    }
    if (path === '/healthz' || path === '/readyz') {
      const health = service.health();
      const ok = path === '/healthz' ? health.healthy : health.ready;
      res.writeHead(ok ? 200 : 503, { 'content-type': 'application/json' }).end(JSON.stringify(health));
      return;
    }
    if (path === '/metrics') {
      service.metrics.registry
        .metrics()
        .then((text) => res.writeHead(200, { 'content-type': service.metrics.registry.contentType }).end(text))
        .catch((err: unknown) => res.writeHead(500).end(errorSummary(err)));
      return;
    }
    res.writeHead(404, { 'content-type': 'application/json' }).end(JSON.stringify({ error: 'not found' }));
  });
  return new Promise((resolve, reject) => {
    server.once('error', reject);
    server.listen(port, () => resolve(server));
  });
}
