import { createHmac } from 'node:crypto';
import http from 'node:http';
import https from 'node:https';
import { SIGNATURE_HEADER } from '../../src/signature.ts';

/**
 * The header of docs/protocol.md#changes-route (`t=<unix seconds>,v1=<hex HMAC-SHA256(secret, t + "." + body)>`),
 * computed over the bytes that are sent. Same result as `signBody` of src/signature.ts, which the
 * Worker verifies with, without encoding the body again or going through WebCrypto's copies.
 */
export function signBodyBytes(secret: string, body: Buffer, unixSeconds: number): string {
  const mac = createHmac('sha256', secret).update(`${unixSeconds}.`).update(body).digest('hex');
  return `t=${unixSeconds},v1=${mac}`;
}

export interface EdgeResponse {
  status: number;
  text: string;
}

/**
 * POSTs batches to the Worker over keep-alive connections (node:http: fetch's per-request costs show
 * at a few hundred large requests per second). Rejects on network errors and when `signal` aborts.
 */
export class EdgeClient {
  private readonly agent: http.Agent;
  private readonly request: typeof http.request;

  /** `edgeUrl` without a trailing slash; paths are appended to it. */
  constructor(
    private readonly edgeUrl: string,
    private readonly secret: string,
    maxSockets: number,
  ) {
    const secure = new URL(edgeUrl).protocol === 'https:';
    this.agent = secure ? new https.Agent({ keepAlive: true, maxSockets }) : new http.Agent({ keepAlive: true, maxSockets });
    this.request = secure ? https.request : http.request;
  }

  post(path: string, body: Buffer, signal: AbortSignal): Promise<EdgeResponse> {
    const url = new URL(this.edgeUrl + path);
    return new Promise((resolve, reject) => {
      const req = this.request(
        url,
        {
          method: 'POST',
          agent: this.agent,
          signal,
          headers: {
            'content-type': 'application/json',
            'content-length': body.length,
            [SIGNATURE_HEADER]: signBodyBytes(this.secret, body, Math.floor(Date.now() / 1000)),
          },
        },
        (res) => {
          const chunks: Buffer[] = [];
          res.on('data', (chunk: Buffer) => chunks.push(chunk));
          res.on('end', () => resolve({ status: res.statusCode ?? 0, text: Buffer.concat(chunks).toString('utf8') }));
          res.on('error', reject);
          // A connection lost mid-response ends with 'close' and no 'end'.
          res.on('close', () => res.complete || reject(new Error('connection closed before the response ended')));
        },
      );
      req.on('error', reject);
      req.end(body);
    });
  }

  close(): void {
    this.agent.destroy();
  }
}
