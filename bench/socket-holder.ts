/**
 * A child process of a benchmark that holds device WebSockets for it (bench/socket-holders.ts):
 * one process cannot hold more than the machine's 20,000 open files, and the sockets' client
 * work spreads over the cores. Commands arrive over IPC; every connect is the `ws` device of
 * bench/edge-devices.ts, so a frame's arrival time is taken as it arrives.
 */
import { performance } from 'node:perf_hooks';
import { connectMany, type Device } from './edge-devices.ts';
import type { HolderCommand, HolderReply } from './socket-holders.ts';

let devices: Device[] = [];

const reply = (r: HolderReply) => process.send!(r);

process.on('message', (command: HolderCommand) => {
  void handle(command).catch((err: unknown) => reply({ type: 'error', message: err instanceof Error ? err.message : String(err) }));
});
// The benchmark ended (or died): nothing is left to hold.
process.on('disconnect', () => process.exit(0));

async function handle(command: HolderCommand): Promise<void> {
  if (command.type === 'connect') {
    const { devices: opened, stats } = await connectMany(command.urls, { concurrency: command.inFlight, timeoutMs: 120_000 });
    devices = opened;
    // Wall-clock times, comparable with the parent's: the arrival of each device's `init`.
    const initAt = opened.map((d) => performance.timeOrigin + d.times[0]!);
    reply({ type: 'connected', initAt, retries: stats.retries });
    return;
  }
  for (const d of devices) d.close();
  devices = [];
  reply({ type: 'closed' });
}
