/**
 * Baseline for the fan-out figures: a plain `ws` server in its own Node process that sends one
 * frame to every connected socket when asked (POST /broadcast, answered once every send was
 * handed to the kernel). The same benchmark clients receive from it, so the difference to the
 * edge's figure is what the edge adds over loopback and the clients' own work.
 *
 * Run as a child process; prints `ready <port>`.
 */
import { createServer } from 'node:http';
import type { AddressInfo } from 'node:net';
import { WebSocketServer } from 'ws';

const server = createServer((req, res) => {
  if (req.method !== 'POST' || req.url !== '/broadcast') {
    res.writeHead(404).end();
    return;
  }
  let body = '';
  req.setEncoding('utf8');
  req.on('data', (c: string) => (body += c));
  req.on('end', () => {
    for (const ws of wss.clients) ws.send(body);
    res.writeHead(200, { 'content-type': 'application/json' }).end(JSON.stringify({ sent: wss.clients.size }));
  });
});
const wss = new WebSocketServer({ server, perMessageDeflate: false });
wss.on('connection', (ws) => ws.send(JSON.stringify({ event: 'init', payload: {} })));
server.listen(0, '127.0.0.1', () => console.log(`ready ${(server.address() as AddressInfo).port}`));
process.on('SIGTERM', () => process.exit(0));
