// RSS sampling for the memory children (measurement 5): the peak, and what is left after
// the process settles and a forced GC (run them with --expose-gc).
import { setTimeout as sleep } from 'node:timers/promises';

const gc = (globalThis as { gc?: () => void }).gc ?? (() => undefined);

/** What `settle()` reads (bytes), with the idle baseline taken by `start()`. */
export interface RssReading {
  baselineRss: number;
  peakRss: number;
  settledRss: number;
  afterGcRss: number;
  heapUsed: number;
  external: number;
  arrayBuffers: number;
  /** After a forced GC: what is still referenced. */
  live: { heapUsed: number; external: number; arrayBuffers: number };
}

export class RssSampler {
  peak = 0;
  /** process.memoryUsage() at the peak: how the peak splits into V8 heap and buffers. */
  atPeak: NodeJS.MemoryUsage | undefined;
  private timer: NodeJS.Timeout | undefined;

  /** Collects garbage, takes the RSS as the baseline and samples every 5 ms from then on. */
  start(): number {
    gc();
    const baseline = process.memoryUsage().rss;
    this.peak = baseline;
    this.timer ??= setInterval(() => this.sample(), 5);
    return baseline;
  }

  sample(): void {
    const usage = process.memoryUsage();
    if (usage.rss > this.peak) {
      this.peak = usage.rss;
      this.atPeak = usage;
    }
  }

  /**
   * The last sample, 200 ms to settle, then: RSS and the heap as they are, and after a forced
   * GC what is still referenced. Sampling stops.
   */
  async settle(): Promise<Omit<RssReading, 'baselineRss'>> {
    this.sample();
    await sleep(200);
    const settled = process.memoryUsage();
    gc();
    const afterGc = process.memoryUsage();
    clearInterval(this.timer);
    this.timer = undefined;
    return {
      peakRss: Math.max(this.peak, settled.rss),
      settledRss: settled.rss,
      heapUsed: settled.heapUsed,
      external: settled.external,
      arrayBuffers: settled.arrayBuffers,
      afterGcRss: afterGc.rss,
      live: { heapUsed: afterGc.heapUsed, external: afterGc.external, arrayBuffers: afterGc.arrayBuffers },
    };
  }
}
