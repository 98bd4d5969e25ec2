/**
 * installWeftCni puts the weft CNI plugin where a runtime's CNI configuration finds it: the shim
 * cni/install.sh writes into `binDir` (running this tree's dist/cni/main.js with this Node), the
 * reference plugins named in `links` linked beside it (containerd 1.6 takes one bin_dir), and a
 * conflist `confDir/file` for network `net`: weft, then portmap with its port-mapping capability.
 */
import { execFileSync } from 'node:child_process';
import { mkdirSync, symlinkSync, writeFileSync } from 'node:fs';
import path from 'node:path';

/** PLUGINS is where Debian's containernetworking-plugins put the reference plugins. */
export const PLUGINS = '/usr/lib/cni';
const ROOT = path.resolve(path.dirname(new URL(import.meta.url).pathname), '..');

export function installWeftCni(
  binDir: string,
  confDir: string,
  file: string,
  net: string,
  links: readonly string[] = [],
): void {
  mkdirSync(confDir, { recursive: true });
  execFileSync('sh', [
    path.join(ROOT, 'cni/install.sh'),
    binDir,
    process.execPath,
    path.join(ROOT, 'dist/cni/main.js'),
  ]);
  for (const p of links) symlinkSync(path.join(PLUGINS, p), path.join(binDir, p));
  writeFileSync(
    path.join(confDir, file),
    JSON.stringify({
      cniVersion: '1.0.0',
      name: net,
      plugins: [{ type: 'weft' }, { type: 'portmap', capabilities: { portMappings: true } }],
    }),
  );
}
