import { execFile } from 'node:child_process';
import { constants as osConstants } from 'node:os';
import { promisify } from 'node:util';
import { errorMessage, InputError, TunOpenError, WeftError } from '../../common/errors.js';
import { formatCidr, parseCidr } from '../../common/types.js';
import { MTU_MAX, MTU_MIN } from '../constants.js';
import type { TunDevice } from './device.js';
import { FdWatcher, isNativeSystemError, loadNative, type NativeAddon } from './native.js';

const execFileAsync = promisify(execFile);

/** LinuxTunOptions says which device to open. */
export interface LinuxTunOptions {
  /** name of the interface; may contain `%d` for the kernel to pick a number; at most 15 bytes. */
  name: string;
  /** mode is 'tun' (IP packets, the default) or 'tap' (Ethernet frames). */
  mode?: 'tun' | 'tap';
  /** multiQueue opens one queue of a multi-queue device (IFF_MULTI_QUEUE); every opener must ask for it. */
  multiQueue?: boolean;
  /** vnetHdr prefixes every packet with a virtio_net_hdr (IFF_VNET_HDR), needed for offloads. */
  vnetHdr?: boolean;
}

/**
 * LinuxTun is a kernel TUN/TAP device opened through the native addon. Its I/O methods are thin
 * pass-throughs to the addon (one native call per batch, nothing allocated per packet) and follow
 * the TunDevice contract; a packet longer than its slot is reported with length -1.
 *
 * A read that fails for another reason than "nothing queued" is not thrown: readBatch returns 0
 * and bumps `readErrors`/`lastReadError` (a device whose link vanished, for instance).
 *
 * The async helpers (setMtu, setUp, addAddress, ...) are control plane: they run `ip` and must
 * never be called from the datapath.
 */
export class LinuxTun implements TunDevice {
  readonly name: string;
  readonly kind: 'tun' | 'tap';
  /** fd is the device's file descriptor; owned by this object until close(). */
  readonly fd: number;
  /** readErrors counts reads that failed with an error other than EAGAIN. */
  readErrors = 0;
  /** lastReadErrno is the errno of the last failed read (0 if none). */
  lastReadErrno = 0;

  readonly #native: NativeAddon;
  #closed = false;
  readonly #watcher: FdWatcher;
  #netns: string | undefined;

  private constructor(native: NativeAddon, fd: number, name: string, kind: 'tun' | 'tap') {
    this.#native = native;
    this.fd = fd;
    this.#watcher = new FdWatcher(native, fd);
    this.name = name;
    this.kind = kind;
  }

  /**
   * open creates (or attaches to) the device. Throws TunOpenError with a one-line reason: the
   * addon is not built, /dev/net/tun is missing, no CAP_NET_ADMIN, the device is busy, or the
   * name is invalid.
   */
  static open(opts: LinuxTunOptions): LinuxTun {
    const native = loadNative();
    const kind = opts.mode ?? 'tun';
    try {
      const r = native.tunOpen(opts.name, kind, opts.multiQueue ?? false, opts.vnetHdr ?? false);
      return new LinuxTun(native, r.fd, r.name, kind);
    } catch (err) {
      throw toTunOpenError(opts.name, err);
    }
  }

  /** onReadable installs (or with undefined removes) the readiness callback; see TunDevice. */
  onReadable(cb: (() => void) | undefined): void {
    if (!this.#closed) this.#watcher.set(cb);
  }

  /** readBatch: see TunDevice. `buf` and `lengths` are borrowed until this call returns. */
  readBatch(buf: Buffer, offset: number, stride: number, max: number, lengths: Int32Array): number {
    if (this.#closed) return 0;
    const n = this.#native.readBatch(this.fd, buf, offset, stride, max, lengths);
    if (n >= 0) return n;
    this.readErrors++;
    this.lastReadErrno = -n;
    return 0;
  }

  /**
   * writeBatch: see TunDevice. Borrowed until this call returns. A packet the kernel refuses
   * (not IPv4/IPv6 on a TUN, link down) is skipped and not counted.
   */
  writeBatch(buf: Buffer, offsets: Int32Array, lengths: Int32Array, count: number): number {
    if (this.#closed) return 0;
    return this.#native.writeBatch(this.fd, buf, offsets, lengths, count);
  }

  /** close stops the watcher and releases the fd; idempotent. The kernel then removes the device. */
  close(): void {
    if (this.#closed) return;
    this.#closed = true;
    this.#watcher.close();
    this.#native.close(this.fd);
  }

  /** closed says whether close() was called. */
  get closed(): boolean {
    return this.#closed;
  }

  /** lastReadError names lastReadErrno ('EIO', ...), or undefined if no read failed. */
  get lastReadError(): string | undefined {
    if (this.lastReadErrno === 0) return undefined;
    const hit = Object.entries(osConstants.errno).find(([, v]) => v === this.lastReadErrno);
    return hit?.[0] ?? `errno ${this.lastReadErrno}`;
  }

  /** setOffload sets TUNSETOFFLOAD flags (the addon's TUN_F_*); needs a device opened with vnetHdr. */
  setOffload(flags: number): void {
    this.#native.tunSetOffload(this.fd, flags);
  }

  /** setVnetHdrSize sets the virtio_net_hdr length the kernel uses on this device (10 or 12). */
  setVnetHdrSize(size: number): void {
    this.#native.tunSetVnetHdrSize(this.fd, size);
  }

  // ---- control plane: configuration through `ip` (async, never on the hot path) ----

  /** setMtu sets the interface MTU (MTU_MIN..MTU_MAX). */
  async setMtu(mtu: number): Promise<void> {
    if (!Number.isInteger(mtu) || mtu < MTU_MIN || mtu > MTU_MAX) {
      throw new InputError(`invalid mtu ${mtu}: want an integer in ${MTU_MIN}-${MTU_MAX}`);
    }
    await this.#ip('link', 'set', 'dev', this.name, 'mtu', String(mtu));
  }

  /** setGsoMaxSize caps the size of the segmentation-offload packets the kernel builds for this device. */
  async setGsoMaxSize(bytes: number): Promise<void> {
    if (!Number.isInteger(bytes) || bytes < 1 || bytes > 65536) {
      throw new InputError(`invalid gso_max_size ${bytes}: want an integer in 1-65536`);
    }
    await this.#ip('link', 'set', 'dev', this.name, 'gso_max_size', String(bytes));
  }

  /** setUp brings the interface up. */
  async setUp(): Promise<void> {
    await this.#ip('link', 'set', 'dev', this.name, 'up');
  }

  /** setDown brings the interface down. */
  async setDown(): Promise<void> {
    await this.#ip('link', 'set', 'dev', this.name, 'down');
  }

  /** addAddress assigns an address with its prefix, e.g. `10.32.0.1/12`; idempotent (`ip address replace`). */
  async addAddress(cidr: string): Promise<void> {
    await this.#ip('address', 'replace', formatCidr(parseCidr(cidr)), 'dev', this.name);
  }

  /** delAddress removes an address previously added; fails if it is not there. */
  async delAddress(cidr: string): Promise<void> {
    await this.#ip('address', 'del', formatCidr(parseCidr(cidr)), 'dev', this.name);
  }

  /** addRoute routes a prefix through the device, e.g. `10.32.0.0/12`; idempotent (`ip route replace`). */
  async addRoute(cidr: string): Promise<void> {
    await this.#ip('route', 'replace', formatCidr(parseCidr(cidr)), 'dev', this.name);
  }

  /** delRoute removes a route through the device; fails if it is not there. */
  async delRoute(cidr: string): Promise<void> {
    await this.#ip('route', 'del', formatCidr(parseCidr(cidr)), 'dev', this.name);
  }

  /**
   * moveToNetns moves the interface into the named network namespace; this fd keeps reading and
   * writing it, and the helpers above then configure it there (`ip -n NS`). For tests and tools
   * that hold the fd in one namespace and serve another.
   */
  async moveToNetns(netns: string): Promise<void> {
    if (!/^[A-Za-z0-9_.-]{1,64}$/.test(netns)) throw new InputError(`invalid network namespace name "${netns}"`);
    await this.#ip('link', 'set', 'dev', this.name, 'netns', netns);
    this.#netns = netns;
  }

  async #ip(...args: string[]): Promise<void> {
    await runIp(this.#netns === undefined ? args : ['-n', this.#netns, ...args]);
  }
}

/** runIp runs `ip ARGS`; a failure becomes WeftError('EWEFT_SYSTEM', 'ip ARGS failed: <first stderr line>'). */
async function runIp(args: string[]): Promise<void> {
  try {
    await execFileAsync('ip', args, { timeout: 10_000 });
  } catch (err) {
    const e = err as { code?: unknown; stderr?: unknown };
    const stderr = typeof e.stderr === 'string' ? e.stderr.trim().split('\n')[0] : '';
    const why = e.code === 'ENOENT' ? 'ip command not found (install iproute2)' : stderr || errorMessage(err);
    throw new WeftError('EWEFT_SYSTEM', `ip ${args.join(' ')} failed: ${why}`, { cause: err });
  }
}

/**
 * toTunOpenError turns the addon's error from opening device `name` into a TunOpenError whose
 * one-line message says what to do (exported for other openers and for tests).
 */
export function toTunOpenError(name: string, err: unknown): TunOpenError {
  const code = isNativeSystemError(err) ? err.code : undefined;
  switch (code) {
    case 'ENOENT':
    case 'ENODEV':
    case 'ENXIO':
      return new TunOpenError(
        '/dev/net/tun is missing: load the tun module or give the container --device /dev/net/tun',
        { cause: err },
      );
    case 'EPERM':
    case 'EACCES':
      return new TunOpenError(`permission denied opening TUN device ${name}: need CAP_NET_ADMIN (run as root)`, {
        cause: err,
      });
    case 'EBUSY':
      return new TunOpenError(`TUN device ${name} is busy (another process owns it)`, { cause: err });
    default:
      return new TunOpenError(`cannot open TUN device ${name}: ${errorMessage(err)}`, { cause: err });
  }
}
