/**
 * Mounts that daemons leave under their own directories (overlay layers, nsfs of network
 * namespaces, after a SIGKILL too): undone deepest first, best effort, so the directory can go.
 */
import { execFileSync } from 'node:child_process';
import { readFileSync, rmSync } from 'node:fs';

/** unmountUnder lazily unmounts every mount below `dir` seen from this mount namespace, deepest first. */
export function unmountUnder(dir: string): void {
  const mounts = readFileSync('/proc/self/mounts', 'utf8')
    .split('\n')
    .map((l) => l.split(' ')[1] ?? '')
    .filter((m) => m.startsWith(`${dir}/`))
    .sort((a, b) => b.length - a.length);
  for (const m of mounts) {
    try {
      execFileSync('umount', ['-l', m], { stdio: 'ignore' });
    } catch {
      // best effort: already gone, or busy until its last user exits
    }
  }
}

/** removeMounted unmounts what is below `dir` and removes it. */
export function removeMounted(dir: string): void {
  unmountUnder(dir);
  rmSync(dir, { recursive: true, force: true });
}
