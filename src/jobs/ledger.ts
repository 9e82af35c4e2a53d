import { closeSync, openSync, readFileSync, statSync, writeFileSync, writeSync } from 'node:fs';
import { StorageError } from '../storage/sqlite.js';

export type EndState = 'delivered' | 'failed' | 'cancelled';

/** One end per slot: `<job id> <state>`, space-padded; a slot starting with a zero byte is free. */
const SLOT_BYTES = 64;
const SLOTS = 256;
const LEDGER_BYTES = SLOT_BYTES * SLOTS;

/**
 * Where a job's end goes when the database cannot take it (the disk is full, another process
 * holds the lock): a file of fixed size, made when there was room and only ever overwritten in
 * place, so writing it needs no new space on the disk. The next start (or the database coming
 * back) moves its entries into the database, so a job already answered is never run or posted
 * again. Holds 256 ends; the 257th is refused like the database write was.
 */
export class OutcomeLedger {
  private readonly fd: number;
  private readonly used = new Map<string, number>();

  constructor(readonly file: string) {
    let size = -1;
    try {
      size = statSync(file).size;
    } catch {
      /* made below */
    }
    try {
      if (size !== LEDGER_BYTES) writeFileSync(file, Buffer.alloc(LEDGER_BYTES));
      this.fd = openSync(file, 'r+');
    } catch (error) {
      throw new StorageError(file, error);
    }
    this.entries().forEach(({ id }, slot) => {
      this.used.set(id, slot);
    });
  }

  /** The ends recorded here, oldest slot first. */
  entries(): Array<{ id: string; state: EndState }> {
    const bytes = readFileSync(this.file);
    const found: Array<{ id: string; state: EndState }> = [];
    for (let offset = 0; offset + SLOT_BYTES <= bytes.length; offset += SLOT_BYTES) {
      if (bytes[offset] === 0) continue;
      const [id, state] = bytes
        .subarray(offset, offset + SLOT_BYTES)
        .toString('utf8')
        .trim()
        .split(' ');
      if (id && (state === 'delivered' || state === 'failed' || state === 'cancelled')) found.push({ id, state });
    }
    return found;
  }

  get size(): number {
    return this.used.size;
  }

  /** Records a job's end (synchronously: it must be on disk before the outcome is shown). */
  add(id: string, state: EndState): void {
    let slot = this.used.get(id);
    if (slot === undefined) {
      const taken = new Set(this.used.values());
      slot = [...Array(SLOTS).keys()].find((s) => !taken.has(s));
      if (slot === undefined) throw Object.assign(new Error(`${this.file} is full (${SLOTS} job ends wait for the database)`), { code: 'ENOSPC' });
    }
    const entry = Buffer.alloc(SLOT_BYTES, ' ');
    entry.write(`${id} ${state}`.slice(0, SLOT_BYTES - 1));
    entry[SLOT_BYTES - 1] = 0x0a;
    writeSync(this.fd, entry, 0, SLOT_BYTES, slot * SLOT_BYTES);
    this.used.set(id, slot);
  }

  /** Frees every slot (their ends are in the database now). */
  clear(): void {
    if (this.used.size === 0) return;
    writeSync(this.fd, Buffer.alloc(LEDGER_BYTES), 0, LEDGER_BYTES, 0);
    this.used.clear();
  }

  close(): void {
    closeSync(this.fd);
  }
}
