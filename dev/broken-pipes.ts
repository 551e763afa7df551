/**
 * A reader of our output that goes away (`npm start | cat`, `| tee log`: Ctrl-C stops the reader
 * too) must not end this process with an EPIPE before it has stopped what it started
 * (docs/protocol.md#local-run): writes to a closed stdout or stderr are dropped from then on.
 */
export function survivePipeReaders(): void {
  for (const stream of [process.stdout, process.stderr]) {
    stream.on('error', (err: NodeJS.ErrnoException) => {
      if (err.code !== 'EPIPE' && err.code !== 'ERR_STREAM_DESTROYED') throw err;
      // Further writes fail quietly: the destroyed stream discards them.
      stream.destroy();
    });
  }
}
