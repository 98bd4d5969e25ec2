/**
 * The HTTP API's two credentials on disk: the bearer token file a TCP caller must present
 * ({@link ensureApiToken}) and the unix socket whose file mode and group decide who may connect
 * ({@link listenApiSocket}). Both are made and checked once, when the daemon starts; the request
 * handling that relies on them is http.ts, which re-exports everything here.
 */
import { randomBytes } from 'node:crypto';
import {
  chmodSync,
  lchownSync,
  lstatSync,
  readFileSync,
  renameSync,
  rmdirSync,
  rmSync,
  type Stats,
  writeFileSync,
} from 'node:fs';
import { connect, type Server as NetServer } from 'node:net';
import path from 'node:path';
import { ConfigError, errorMessage, WeftError } from '../common/errors.js';
import { mkdirParents } from './state-dir.js';

/** API_TOKEN_BYTES: the bearer token is this many random bytes, written as hex (256 bits). */
export const API_TOKEN_BYTES = 32;
/** UNIX_PATH_MAX_BYTES: the longest unix socket path the kernel takes (sun_path is 108 bytes with the NUL). */
export const UNIX_PATH_MAX_BYTES = 107;
/** API_SOCKET_MODE: the socket is read-write for its owner (root) and group (`weft` when it exists), nobody else. */
export const API_SOCKET_MODE = 0o660;
/** API_SOCKET_GROUP: members of this local group may drive the router over its socket. */
export const API_SOCKET_GROUP = 'weft';

/**
 * ensureApiToken returns the API's bearer token from `file`, first writing a new one
 * (API_TOKEN_BYTES random bytes as hex, mode 0600) when there is none. A token file others may
 * read is narrowed to 0600. An operator may put a token of their own there (32+ visible ASCII characters).
 */
export function ensureApiToken(file: string): string {
  mkdirParents(path.dirname(file), 0o700);
  let st: Stats | undefined;
  try {
    st = lstatSync(file);
  } catch (err) {
    if ((err as NodeJS.ErrnoException).code !== 'ENOENT') throw tokenError(file, err);
  }
  if (st === undefined) {
    const token = randomBytes(API_TOKEN_BYTES).toString('hex');
    const tmp = `${file}.${process.pid}.tmp`;
    try {
      writeFileSync(tmp, `${token}\n`, { mode: 0o600, flush: true });
      renameSync(tmp, file);
    } catch (err) {
      throw tokenError(file, err);
    }
    return token;
  }
  if (!st.isFile()) throw new ConfigError(`the API token file ${file} is not a regular file`);
  try {
    if ((st.mode & 0o077) !== 0) chmodSync(file, 0o600);
    const token = readFileSync(file, 'utf8').trim();
    if (/^[\x21-\x7e]{32,1024}$/.test(token)) return token;
  } catch (err) {
    throw tokenError(file, err);
  }
  throw new ConfigError(
    `the API token file ${file} holds no token (want 32 or more visible ASCII characters): remove it and launch makes one`,
  );
}

function tokenError(file: string, err: unknown): ConfigError {
  return new ConfigError(`cannot use the API token file ${file}: ${errorMessage(err)}`, { cause: err });
}

/**
 * listenApiSocket makes `server` listen on the unix socket `file`, mode API_SOCKET_MODE, group
 * `gid` (the `weft` group; undefined: root's). A socket left by a router that died (nothing
 * answers on it) is removed first; a live one is refused with EWEFT_CONFLICT. Resolves to a close
 * function that stops listening (Node unlinks the socket) and removes the socket's directory when
 * it made it or `ownDir` says the directory is the socket's alone (a per-namespace one under
 * /run/weft, which a router that was killed leaves behind); only an empty directory is removed.
 */
export async function listenApiSocket(
  server: NetServer,
  file: string,
  gid: number | undefined,
  ownDir = false,
): Promise<() => Promise<void>> {
  if (!path.isAbsolute(file)) throw new ConfigError(`invalid API socket "${file}": want an absolute path`);
  if (Buffer.byteLength(file) > UNIX_PATH_MAX_BYTES) {
    throw new ConfigError(
      `the API socket path ${file} is longer than ${UNIX_PATH_MAX_BYTES} bytes: choose another with --api-socket`,
    );
  }
  const dir = path.dirname(file);
  let made: string | undefined;
  try {
    made = mkdirParents(dir, 0o755);
  } catch (err) {
    throw new WeftError('EWEFT_SYSTEM', `cannot make the API socket directory ${dir}: ${errorMessage(err)}`, {
      cause: err,
    });
  }
  for (let attempt = 0; ; attempt++) {
    const err = await bindSocket(server, file);
    if (err === undefined) break;
    if (err.code !== 'EADDRINUSE' || attempt > 0) {
      throw new WeftError('EWEFT_SYSTEM', `cannot listen on the API socket ${file}: ${err.message}`, { cause: err });
    }
    let st: Stats;
    try {
      st = lstatSync(file);
    } catch {
      continue; // gone meanwhile: try again
    }
    if (!st.isSocket()) throw new ConfigError(`the API socket path ${file} exists and is not a socket: remove it`);
    if (await socketAnswers(file)) {
      throw new WeftError(
        'EWEFT_CONFLICT',
        `the API socket ${file} is already in use: is a weft router already running in this network namespace?`,
      );
    }
    // Left by a router that died: nothing answers on it.
    try {
      rmSync(file);
    } catch (e) {
      throw new WeftError('EWEFT_SYSTEM', `cannot remove the stale API socket ${file}: ${errorMessage(e)}`, {
        cause: e,
      });
    }
  }
  try {
    const st = lstatSync(file);
    if (gid !== undefined && st.gid !== gid) lchownSync(file, st.uid, gid);
    if ((st.mode & 0o777) !== API_SOCKET_MODE && st.isSocket()) chmodSync(file, API_SOCKET_MODE);
  } catch (err) {
    await new Promise<void>((r) => server.close(() => r()));
    throw new WeftError(
      'EWEFT_SYSTEM',
      `cannot set the owner and mode of the API socket ${file}: ${errorMessage(err)}`,
      {
        cause: err,
      },
    );
  }
  return async () => {
    await new Promise<void>((r) => server.close(() => r()));
    if (made !== undefined || ownDir) {
      try {
        rmdirSync(dir);
      } catch {
        // not empty, or gone: leave it
      }
    }
  };
}

/** bindSocket listens on `file`, created with API_SOCKET_MODE (the umask is narrowed for the bind, which is synchronous). */
function bindSocket(server: NetServer, file: string): Promise<NodeJS.ErrnoException | undefined> {
  return new Promise((resolve) => {
    const onError = (err: NodeJS.ErrnoException) => {
      server.off('listening', onListening);
      resolve(err);
    };
    const onListening = () => {
      server.off('error', onError);
      resolve(undefined);
    };
    server.once('error', onError);
    server.once('listening', onListening);
    const umask = process.umask(0o777 & ~API_SOCKET_MODE);
    try {
      server.listen(file);
    } finally {
      process.umask(umask);
    }
  });
}

/** socketAnswers: something accepts connections on the unix socket `file` (a timeout counts as yes: it is not stale). */
function socketAnswers(file: string): Promise<boolean> {
  return new Promise((resolve) => {
    const s = connect({ path: file });
    const done = (v: boolean) => {
      s.destroy();
      resolve(v);
    };
    s.setTimeout(1_000, () => done(true));
    s.once('connect', () => done(true));
    s.once('error', (err: NodeJS.ErrnoException) => done(err.code !== 'ECONNREFUSED' && err.code !== 'ENOENT'));
  });
}
