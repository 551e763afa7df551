import { createServer, type Server } from 'node:http';

/** A stand-in for the Worker that answers 200 and counts the changes it got, without building or parsing the body. */
export function countingSink(onChanges: (n: number) => void): Server {
  const needle = Buffer.from('"lsn":');
  return createServer((req, res) => {
    let tail: Buffer = Buffer.alloc(0);
    req.on('data', (chunk: Buffer) => {
      const b = tail.length > 0 ? Buffer.concat([tail, chunk]) : chunk;
      let n = 0;
      for (let i = b.indexOf(needle); i >= 0; i = b.indexOf(needle, i + needle.length)) n++;
      onChanges(n);
      tail = b.subarray(Math.max(0, b.length - needle.length + 1));
    });
    req.on('end', () => res.writeHead(200, { 'content-type': 'application/json' }).end('{"applied":0,"skipped":0}'));
  });
}
