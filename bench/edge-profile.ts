/**
 * A CPU profile of the Worker's isolate (where the objects run) through `wrangler dev`'s
 * inspector (the Chrome DevTools protocol), summarized by self time: what dominates inside
 * workerd, which the Node side's --cpu-prof cannot see.
 */
import { writeFileSync } from 'node:fs';
import WebSocket from 'ws';

interface CallFrame {
  functionName: string;
  url: string;
  lineNumber: number;
  columnNumber: number;
}
interface ProfileNode {
  id: number;
  callFrame: CallFrame;
  hitCount?: number;
  children?: number[];
}
export interface CpuProfile {
  nodes: ProfileNode[];
  startTime: number;
  endTime: number;
  samples?: number[];
  timeDeltas?: number[];
}

export class WorkerProfiler {
  private nextId = 1;
  private readonly pending = new Map<number, { resolve: (v: unknown) => void; reject: (e: Error) => void }>();

  private constructor(private readonly ws: WebSocket) {
    ws.on('message', (data) => {
      const msg = JSON.parse(data.toString()) as { id?: number; result?: unknown; error?: { message: string } };
      if (msg.id === undefined) return;
      const p = this.pending.get(msg.id);
      this.pending.delete(msg.id);
      if (msg.error) p?.reject(new Error(msg.error.message));
      else p?.resolve(msg.result);
    });
  }

  static async connect(inspectorPort: number): Promise<WorkerProfiler> {
    const targets = (await (await fetch(`http://127.0.0.1:${inspectorPort}/json`)).json()) as { webSocketDebuggerUrl: string }[];
    const ws = new WebSocket(targets[0]!.webSocketDebuggerUrl, { origin: 'http://localhost', perMessageDeflate: false, maxPayload: 1 << 30 });
    await new Promise<void>((resolve, reject) => {
      ws.once('open', () => resolve());
      ws.once('error', reject);
    });
    const profiler = new WorkerProfiler(ws);
    await profiler.call('Profiler.enable');
    return profiler;
  }

  call(method: string, params: Record<string, unknown> = {}): Promise<unknown> {
    const id = this.nextId++;
    return new Promise((resolve, reject) => {
      this.pending.set(id, { resolve, reject });
      this.ws.send(JSON.stringify({ id, method, params }));
    });
  }

  async start(intervalUs = 250): Promise<void> {
    await this.call('Profiler.setSamplingInterval', { interval: intervalUs });
    await this.call('Profiler.start');
  }

  async stop(file?: string): Promise<CpuProfile> {
    const { profile } = (await this.call('Profiler.stop')) as { profile: CpuProfile };
    if (file) writeFileSync(file, JSON.stringify(profile));
    return profile;
  }

  /** The isolate's used heap, MB, after a full collection when `collect` (NaN if the inspector does not answer within 5 s). */
  async heapMb(collect = false): Promise<number> {
    const answer = async () => {
      if (collect) await this.call('HeapProfiler.collectGarbage');
      return ((await this.call('Runtime.getHeapUsage')) as { usedSize: number }).usedSize / 1024 / 1024;
    };
    return await Promise.race([answer(), new Promise<number>((r) => setTimeout(() => r(NaN), 5_000))]);
  }

  close(): void {
    this.ws.terminate();
  }
}

const short = (url: string) => url.replace(/^.*\//, '');

/**
 * What the isolate spent its time on: total ("inclusive") time of the functions on the stack and
 * self time. `(idle)` is time it waited (for I/O, or for another process), `(program)` native
 * work outside JavaScript; the time of a native API (a WebSocket send, a SQLite call) that V8
 * inlined into its caller is counted as the caller's self time. V8 takes no samples while the
 * isolate is not entered: a gap between two samples much longer than the interval (workerd idle,
 * or busy outside JavaScript committing storage and writing the frames the output gate held back,
 * or the thread waiting for a CPU) is counted as `(not sampled)` instead of being charged to the
 * sample before it; compare the JavaScript time with the process's CPU time to tell them apart.
 * Function names are the bundle's (esbuild keeps them).
 */
export function summarizeProfile(profile: CpuProfile, top = 14, gapUs = 5_000): string[] {
  const deltas = profile.timeDeltas ?? [];
  const samples = profile.samples ?? [];
  const byId = new Map(profile.nodes.map((n) => [n.id, n]));
  const parent = new Map<number, number>();
  for (const n of profile.nodes) for (const c of n.children ?? []) parent.set(c, n.id);
  const name = (n: ProfileNode) => {
    const f = n.callFrame;
    return f.url ? `${f.functionName || '(anonymous)'} ${short(f.url)}:${f.lineNumber + 1}` : f.functionName || '(native)';
  };
  const GAP = -1;
  byId.set(GAP, { id: GAP, callFrame: { functionName: '(not sampled)', url: '', lineNumber: 0, columnNumber: 0 } });
  const selfUs = new Map<number, number>();
  const add = (id: number, us: number) => selfUs.set(id, (selfUs.get(id) ?? 0) + us);
  for (let i = 0; i < samples.length; i++) {
    const us = deltas[i + 1] ?? 0;
    if (us > gapUs) {
      add(samples[i]!, gapUs / 20);
      add(GAP, us - gapUs / 20);
    } else add(samples[i]!, us);
  }
  const self = new Map<string, number>();
  const inclusive = new Map<string, number>();
  let total = 0;
  for (const [id, us] of selfUs) {
    total += us;
    const leaf = name(byId.get(id)!);
    self.set(leaf, (self.get(leaf) ?? 0) + us);
    const seen = new Set<string>();
    for (let at: number | undefined = id; at !== undefined; at = parent.get(at)) {
      const k = name(byId.get(at)!);
      if (k === '(root)' || seen.has(k)) continue;
      seen.add(k);
      inclusive.set(k, (inclusive.get(k) ?? 0) + us);
    }
  }
  const idle = self.get('(idle)') ?? 0;
  const gap = self.get('(not sampled)') ?? 0;
  const rows = (m: Map<string, number>) =>
    [...m]
      .sort((a, b) => b[1] - a[1])
      .slice(0, top)
      .map(([k, us]) => `  ${(us / 1000).toFixed(1).padStart(8)} ms ${((100 * us) / total).toFixed(1).padStart(5)}%  ${k}`);
  const t = (us: number) => `${(us / 1000).toFixed(0)} ms`;
  return [
    `${t(total)} profiled: JavaScript and its native calls ${t(total - idle - gap)}, (idle) ${t(idle)}, not sampled ${t(gap)}`,
    'total time (function and what it called):',
    ...rows(inclusive),
    'self time:',
    ...rows(self),
  ];
}
