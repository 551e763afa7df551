import net from 'node:net';

interface SocketOptions {
  host: string[];
  port: number[];
  path: string | false | undefined;
}

let nextHost = 0;

/**
 * postgres.js connects with Nagle's algorithm on. A COPY's last message (CopyDone, 5 bytes) then
 * waits for the server's delayed ACK of the data before it leaves: about 40 ms per statement, which
 * halved change_logs throughput. This is postgres.js's own connect (TCP or unix socket, TLS is
 * negotiated on top of it by postgres.js) with TCP_NODELAY set.
 */
export function noDelaySocket(options: SocketOptions): net.Socket {
  const socket = new net.Socket();
  if (options.path) return socket.connect(options.path);
  socket.setNoDelay(true);
  const i = nextHost++ % options.host.length;
  return socket.connect(options.port[i] ?? options.port[0] ?? 5432, options.host[i] ?? 'localhost');
}

/** postgres.js options with `noDelaySocket` (the option exists, its type declaration does not). */
export function withNoDelay<T extends object>(options: T): T {
  return Object.assign(options, { socket: noDelaySocket });
}
