import { expect } from 'vitest';
import { tryLoadNative } from '../tun/native.js';

/** LeakCheckOptions says which live resources a leak check compares and how. */
export interface LeakCheckOptions {
  /** only compares the resource types (process.getActiveResourcesInfo() names) it matches; default all. */
  readonly only?: RegExp;
  /**
   * mayClose matches the types allowed to be fewer afterwards than before (the test runner's own
   * come and go); the others must be back to exactly their count. Default: all may be fewer.
   */
  readonly mayClose?: RegExp;
}

/** NET_HANDLES tracks what a networking test could leak (sockets, servers, timers, lookups); only Vitest's own Timeouts may go. */
export const NET_HANDLES: LeakCheckOptions = { only: /^(TCP|Timeout|GetAddrInfo|Pipe)/, mayClose: /^Timeout$/ };

/** ResourceSnapshot is what was alive at one moment, for expectNoLeaks to compare with later. */
export interface ResourceSnapshot {
  /** resources are the tracked event-loop resources, sorted. */
  readonly resources: readonly string[];
  /** watchers counts the native addon's live watchers in this thread (0 when the addon is not built). */
  readonly watchers: number;
  readonly options: LeakCheckOptions;
}

/** snapshotResources records the live event-loop resources and native watchers. */
export function snapshotResources(options: LeakCheckOptions = {}): ResourceSnapshot {
  const { only } = options;
  const resources = process
    .getActiveResourcesInfo()
    .filter((r) => only === undefined || only.test(r))
    .sort();
  return { resources, watchers: tryLoadNative()?.activeWatchers() ?? 0, options };
}

/** LEAK_WAIT_MS bounds how long expectNoLeaks waits for resources to be released (> CLOSE_LINGER_MS). */
const LEAK_WAIT_MS = 3_000;

/** settle lets closed handles finish closing (close callbacks run after the check phase). */
export async function settle(): Promise<void> {
  for (let i = 0; i < 3; i++) await new Promise<void>((r) => setImmediate(r));
  await new Promise<void>((r) => setTimeout(r, 5));
}

/** minus is the multiset difference a - b of two sorted lists. */
function minus(a: readonly string[], b: readonly string[]): string[] {
  const left = new Map<string, number>();
  for (const r of b) left.set(r, (left.get(r) ?? 0) + 1);
  const out: string[] = [];
  for (const r of a) {
    const n = left.get(r) ?? 0;
    if (n > 0) left.set(r, n - 1);
    else out.push(r);
  }
  return out;
}

/**
 * expectNoLeaks settles, then fails if a tracked resource is alive now beyond those in `before`
 * (what the test opened and did not release), if one not allowed to close is gone, or if more
 * native watchers are alive than before.
 */
export async function expectNoLeaks(before: ResourceSnapshot): Promise<void> {
  await settle();
  // Sockets close asynchronously (a closing connection may linger up to CLOSE_LINGER_MS for the
  // peer's FIN): on a loaded machine give releases time before calling anything a leak.
  let now = snapshotResources(before.options);
  for (let waited = 0; waited < LEAK_WAIT_MS && minus(now.resources, before.resources).length > 0; waited += 20) {
    await new Promise<void>((r) => setTimeout(r, 20));
    now = snapshotResources(before.options);
  }
  const { mayClose } = before.options;
  expect(minus(now.resources, before.resources), 'resources left open').toEqual([]);
  if (mayClose !== undefined) {
    const gone = minus(before.resources, now.resources).filter((r) => !mayClose.test(r));
    expect(gone, 'resources gone that the test did not own').toEqual([]);
  }
  expect(now.watchers, 'native watchers left open').toBeLessThanOrEqual(before.watchers);
}
