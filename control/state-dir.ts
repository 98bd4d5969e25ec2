import { mkdirSync, readdirSync, statSync } from 'node:fs';
import path from 'node:path';

/** STATE_ROOT is where persistent router state lives; per network namespace below it. */
export const STATE_ROOT = '/var/lib/weft';

/** NetnsIdentity says which network namespace this process is in. */
export interface NetnsIdentity {
  /** inode is the namespace's inode number (unique while it exists). */
  inode: number;
  /** name is the `ip netns` name when the namespace is a named one, else undefined. */
  name: string | undefined;
  /** root is true for the initial (host) network namespace. */
  root: boolean;
}

/** netnsIdentity identifies the current network namespace from /proc and /run/netns. */
export function netnsIdentity(): NetnsIdentity {
  const inode = statSync('/proc/self/ns/net').ino;
  let root = false;
  try {
    root = statSync('/proc/1/ns/net').ino === inode;
  } catch {
    // /proc/1 not visible (a container with its own pid namespace): not the root netns we know of.
  }
  let name: string | undefined;
  try {
    for (const entry of readdirSync('/run/netns')) {
      try {
        if (statSync(path.join('/run/netns', entry)).ino === inode) {
          name = entry;
          break;
        }
      } catch {
        // a stale entry; ignore
      }
    }
  } catch {
    // no /run/netns: no named namespaces
  }
  return { inode, name, root };
}

/**
 * defaultStateDir returns the state directory for the current network namespace, so that several
 * routers on one machine (one per namespace) never collide:
 * - the host namespace: /var/lib/weft
 * - a named namespace (`ip netns`): /var/lib/weft/netns/NAME (survives router restarts)
 * - an anonymous namespace (e.g. a container's): /var/lib/weft/netns-ino/INODE
 */
export function defaultStateDir(id: NetnsIdentity = netnsIdentity()): string {
  if (id.root) return STATE_ROOT;
  if (id.name !== undefined) return path.join(STATE_ROOT, 'netns', id.name);
  return path.join(STATE_ROOT, 'netns-ino', String(id.inode));
}

/**
 * mkdirParents makes `dir` and its missing parents (each with `mode`), returning the first one it
 * made (undefined when `dir` existed), like `mkdirSync(dir, { recursive: true })` but without its
 * flaw: in Node 20 the recursive form retries forever where mkdir keeps answering ENOENT (any
 * missing path below /proc). Throws the failing call's errno error (ENOTDIR when a component is a file).
 */
export function mkdirParents(dir: string, mode: number): string | undefined {
  const missing: string[] = [];
  for (let p = path.resolve(dir); ; p = path.dirname(p)) {
    let st: ReturnType<typeof statSync>;
    try {
      st = statSync(p);
    } catch (err) {
      if ((err as NodeJS.ErrnoException).code !== 'ENOENT') throw err;
      missing.unshift(p);
      if (p === path.dirname(p)) break;
      continue;
    }
    if (!st.isDirectory()) {
      throw Object.assign(new Error(`ENOTDIR: not a directory, mkdir '${p}'`), { code: 'ENOTDIR', path: p });
    }
    break;
  }
  for (const p of missing) {
    try {
      mkdirSync(p, { mode });
    } catch (err) {
      if ((err as NodeJS.ErrnoException).code !== 'EEXIST') throw err;
    }
  }
  return missing[0];
}
