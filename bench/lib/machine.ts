// How fast the machine is right now. This VM's speed drifts (up to 2× within an hour on
// 2026-11-26, with the same code), which moves every latency row with it; the run reports a
// fixed CPU task's time (taken before every run), a loopback round trip at its start and end,
// and the CPU time the hypervisor took away.
import { createHash } from 'node:crypto';
import { readFileSync } from 'node:fs';
import { performance } from 'node:perf_hooks';
import { median } from './stats.js';

/**
 * A fixed mix of what a job's CPU work is made of (base64 of a megabyte, a hash over it,
 * JSON of a chat message's size), none of it fairbot's code: the median of 15 timings after
 * 25 untimed ones (the JIT's tiers and a sleeping vCPU otherwise show up as "speed"), in ms.
 */
export function cpuYardstick(): number {
  const bytes = Buffer.alloc(1024 * 1024, 7);
  const text = bytes.toString('base64');
  const into = Buffer.alloc(bytes.length);
  const message = { content: 'x'.repeat(1500), components: Array.from({ length: 20 }, (_, i) => ({ type: 2, custom_id: `reroll:${i}`, label: 'Re-roll' })) };
  // Nothing large is allocated per round (the decode goes into a kept buffer): a collection
  // landing in one timing would read as "the machine is slower".
  const once = () => {
    into.write(text, 'base64');
    createHash('sha256').update(into).digest();
    for (let i = 0; i < 50; i++) JSON.parse(JSON.stringify(message));
  };
  for (let i = 0; i < 25; i++) once();
  const times: number[] = [];
  for (let i = 0; i < 15; i++) {
    const t = performance.now();
    once();
    times.push(performance.now() - t);
  }
  return median(times);
}

/** Linux's cumulative CPU counters (/proc/stat), or undefined elsewhere. */
export function cpuCounters(): { steal: number; total: number } | undefined {
  try {
    const fields = readFileSync('/proc/stat', 'utf8').split('\n')[0]!.trim().split(/\s+/).slice(1).map(Number);
    // user nice system idle iowait irq softirq steal ...: steal is the 8th.
    return { steal: fields[7] ?? 0, total: fields.slice(0, 8).reduce((a, b) => a + b, 0) };
  } catch {
    return undefined;
  }
}

/** Percent of the CPU time between two readings that the hypervisor gave to someone else. */
export function stealPercent(from: ReturnType<typeof cpuCounters>, to: ReturnType<typeof cpuCounters>): number | undefined {
  if (!from || !to || to.total === from.total) return undefined;
  return (100 * (to.steal - from.steal)) / (to.total - from.total);
}

/**
 * The other half of a job's time: a small message's round trip over loopback TCP within this
 * process (write, the kernel, the event loop waking for the answer), the median of 300 after
 * 1,000 untimed (the JIT warms up), in µs.
 */
export async function loopbackRoundTripUs(): Promise<number> {
  const { createServer, connect } = await import('node:net');
  const server = createServer((socket) => socket.on('data', (chunk) => socket.write(chunk)));
  await new Promise<void>((resolve) => server.listen(0, '127.0.0.1', resolve));
  const port = (server.address() as { port: number }).port;
  const client = connect(port, '127.0.0.1');
  client.setNoDelay(true);
  await new Promise<void>((resolve) => client.once('connect', () => resolve()));
  const times: number[] = [];
  try {
    for (let i = 0; i < 1300; i++) {
      const t = performance.now();
      await new Promise<void>((resolve) => {
        client.once('data', () => resolve());
        client.write('ping');
      });
      if (i >= 1000) times.push((performance.now() - t) * 1000);
    }
  } finally {
    client.destroy();
    server.close();
  }
  return median(times);
}
