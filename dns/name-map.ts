/**
 * NameMap: the server's table from a name in its domain to what it answers, looked up straight
 * from a parsed query's name bytes (query.ts) on the fast path.
 */
import { hashName, normalizeName } from './names.js';
import type { Query } from './query.js';

/** NameMapEntry is one name in a NameMap bucket; `key` holds the name's bytes for comparison. */
interface NameMapEntry<T> {
  readonly name: string;
  readonly key: Buffer;
  value: T;
  next: NameMapEntry<T> | undefined;
}

/**
 * NameMap maps normalized names (normalizeName) to values, and finds the value for a parsed
 * query straight from `q.nameBuf` and `q.nameHash`, without building the name string: the
 * string costs about as much as the rest of the parse. Hash collisions are chained and
 * resolved by comparing bytes. Writes (set, delete) belong to the control plane; lookup is the
 * hot path and allocates nothing.
 */
export class NameMap<T> {
  readonly #buckets = new Map<number, NameMapEntry<T>>();
  #size = 0;

  /** size is the number of names held. */
  get size(): number {
    return this.#size;
  }

  /** lookup returns the value for the question name of `q` (after a parse that returned Ok), or undefined. */
  lookup(q: Query): T | undefined {
    for (let e = this.#buckets.get(q.nameHash); e !== undefined; e = e.next) {
      if (bytesEqual(e.key, q.nameBuf, q.nameLen)) return e.value;
    }
    return undefined;
  }

  /** get returns the value for `name`, normalized first. */
  get(name: string): T | undefined {
    const n = normalizeName(name);
    for (let e = this.#buckets.get(hashName(n)); e !== undefined; e = e.next) {
      if (e.name === n) return e.value;
    }
    return undefined;
  }

  /** set maps `name` (normalized first) to `value`, replacing any previous value. */
  set(name: string, value: T): void {
    const n = normalizeName(name);
    const h = hashName(n);
    const head = this.#buckets.get(h);
    for (let e = head; e !== undefined; e = e.next) {
      if (e.name === n) {
        e.value = value;
        return;
      }
    }
    this.#buckets.set(h, { name: n, key: Buffer.from(n, 'latin1'), value, next: head });
    this.#size++;
  }

  /** delete removes `name` (normalized first) and says whether it was there. */
  delete(name: string): boolean {
    const n = normalizeName(name);
    const h = hashName(n);
    let prev: NameMapEntry<T> | undefined;
    for (let e = this.#buckets.get(h); e !== undefined; prev = e, e = e.next) {
      if (e.name !== n) continue;
      if (prev !== undefined) prev.next = e.next;
      else if (e.next !== undefined) this.#buckets.set(h, e.next);
      else this.#buckets.delete(h);
      this.#size--;
      return true;
    }
    return false;
  }

  /** clear removes every name. */
  clear(): void {
    this.#buckets.clear();
    this.#size = 0;
  }

  /** entries lists every (name, value) pair, in no particular order. */
  *entries(): IterableIterator<[string, T]> {
    for (const head of this.#buckets.values()) {
      for (let e: NameMapEntry<T> | undefined = head; e !== undefined; e = e.next) yield [e.name, e.value];
    }
  }
}

/** bytesEqual compares `key` with the first `n` bytes of `buf`. */
function bytesEqual(key: Buffer, buf: Buffer, n: number): boolean {
  if (key.length !== n) return false;
  for (let i = 0; i < n; i++) if (key[i] !== buf[i]) return false;
  return true;
}
