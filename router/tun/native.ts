import { existsSync } from 'node:fs';
import { createRequire } from 'node:module';
import { dirname, join, resolve } from 'node:path';
import { fileURLToPath } from 'node:url';
import { errorMessage, TunOpenError } from '../../common/errors.js';

/**
 * NativeWatchHandle is the opaque handle `watch` returns; pass it to `unwatch` (twice is fine).
 * If it is garbage collected while still watching, the watcher is stopped then.
 */
export type NativeWatchHandle = { readonly __brand: 'NativeWatchHandle' };

/** NativeAeadCipher names the two AEADs the addon offers (issue #13). */
export type NativeAeadCipher = 'aes-256-gcm' | 'chacha20-poly1305';

/** NativeAeadKey is the opaque keyed context `aeadKey` returns; `aeadFree` wipes it (GC does too). */
export type NativeAeadKey = { readonly __brand: 'NativeAeadKey' };

/**
 * NativeSystemError is what the addon throws when a system call fails while opening or setting
 * up a device or socket: `code` is the errno name ('ENOENT', 'EBUSY'...), `errno` is -errno as
 * in Node, `syscall` the call that failed, and the message reads "open /dev/net/tun: No such
 * file or directory".
 */
export interface NativeSystemError extends Error {
  readonly code: string;
  readonly errno: number;
  readonly syscall: string;
}

/**
 * NativeAddon is the typed surface of `weft_native.node` (source: native/weft_native.c, whose
 * header comment is the full contract).
 *
 * Ownership: every Buffer and typed array argument is borrowed only until the call returns.
 * Batch calls throw a TypeError on misuse (bad types, slots or spans outside `buf`, counts larger
 * than the arrays) and never throw for a per-packet error. Addresses are IPv4 as unsigned 32-bit
 * integers in host order.
 *
 * Slots: item i of a batch read lands at `buf[offset + i*stride]`; its room is
 * `stride - offset % stride`, cut at the end of `buf`; every slot must start inside `buf`; an
 * item that did not fit is reported with length -1.
 */
export interface NativeAddon {
  /** tunOpen opens /dev/net/tun non-blocking and attaches it (IFF_NO_PI always); throws NativeSystemError. */
  tunOpen(name: string, mode: 'tun' | 'tap', multiQueue: boolean, vnetHdr: boolean): { fd: number; name: string };
  /** tunSetOffload sets TUNSETOFFLOAD flags (TUN_F_*); the device must have been opened with vnetHdr. */
  tunSetOffload(fd: number, flags: number): void;
  /** tunSetVnetHdrSize sets TUNSETVNETHDRSZ (10 or 12 bytes, see VIRTIO_NET_HDR_*). */
  tunSetVnetHdrSize(fd: number, size: number): void;
  /**
   * udpOpen opens a non-blocking UDP/IPv4 socket bound to bindAddr:port (0 = any / ephemeral).
   * rcvbuf/sndbuf (0 = kernel default) are forced past the sysctl limits when privileged. DF is
   * set on every datagram (IP_PMTUDISC_DO): one larger than the kernel's path MTU fails with
   * EMSGSIZE instead of being fragmented. With `offload`, UDP GSO is probed and UDP GRO turned on;
   * `gso`/`gro` say what the kernel accepted. No SO_REUSEADDR, so a port in use fails with
   * EADDRINUSE.
   */
  udpOpen(
    bindAddr: number,
    port: number,
    rcvbuf: number,
    sndbuf: number,
    offload?: boolean,
  ): { fd: number; port: number; gso: boolean; gro: boolean };
  /** pathMtu returns the kernel's path MTU towards addr (route MTU lowered by ICMP), or -errno. */
  pathMtu(addr: number): number;
  /**
   * segmentTcp4 is TSO in software (see datapath/gso.ts segmentTcp4 for the contract); with
   * fullCsum false the TCP checksum holds only the pseudo-header sum (virtio-net NEEDS_CSUM form).
   */
  segmentTcp4(
    src: Buffer,
    pkt: number,
    len: number,
    mss: number,
    dst: Buffer,
    dstOff: number,
    stride: number,
    max: number,
    lens: Int32Array,
    fullCsum: boolean,
  ): number;
  /**
   * tcpToPartial: when the IPv4/TCP packet at buf[ip] (len bytes, not a fragment) has a valid
   * TCP checksum, replaces it with the pseudo-header sum (virtio-net NEEDS_CSUM form) and returns
   * 1; else changes nothing and returns 0.
   */
  tcpToPartial(buf: Buffer, ip: number, len: number): number;
  /** socketBuffers reads SO_RCVBUF/SO_SNDBUF as the kernel reports them (twice what was asked). */
  socketBuffers(fd: number): { rcvbuf: number; sndbuf: number };
  /** watch runs `cb` once per event-loop turn while fd is readable; exceptions go to 'uncaughtException'. */
  watch(fd: number, cb: () => void): NativeWatchHandle;
  /** unwatch stops and closes a watcher (freed on the loop's next close phase); idempotent. */
  unwatch(handle: NativeWatchHandle): void;
  /** activeWatchers counts this thread's watchers whose libuv handle is not closed yet (leak checks). */
  activeWatchers(): number;
  /** readBatch reads up to max packets with read(2); returns the count, or -errno if the first read failed. */
  readBatch(fd: number, buf: Buffer, offset: number, stride: number, max: number, lengths: Int32Array): number;
  /** writeBatch writes count packets with write(2); returns how many were accepted (a refused packet is skipped). */
  writeBatch(fd: number, buf: Buffer, offsets: Int32Array, lengths: Int32Array, count: number): number;
  /**
   * recvBatch receives up to max datagrams with recvmmsg(2); returns the count, or -errno. With
   * gsoSizes, a coalesced UDP GRO train reports its segment size there (0: a plain datagram).
   */
  recvBatch(
    fd: number,
    buf: Buffer,
    offset: number,
    stride: number,
    max: number,
    lengths: Int32Array,
    addrs: Uint32Array,
    ports: Uint16Array,
    gsoSizes?: Uint16Array,
  ): number;
  /**
   * sendBatch sends count datagrams with sendmmsg(2); returns how many were accepted (failed
   * destinations skipped). With gsoSizes, an entry whose size is non-zero and below its length
   * is a UDP GSO train of that segment size; a train the kernel refuses is sent in pieces and
   * counted in stats[0].
   */
  sendBatch(
    fd: number,
    buf: Buffer,
    offsets: Int32Array,
    lengths: Int32Array,
    addrs: Uint32Array,
    ports: Uint16Array,
    count: number,
    gsoSizes?: Uint16Array,
    stats?: Uint32Array,
  ): number;
  /**
   * udp6Open opens a non-blocking IPv6-only UDP socket bound to [::]:port (0 = ephemeral) and
   * reads `device`'s interface index once (throws NativeSystemError ENODEV when there is none):
   * the numeric scope its link-local datagrams are sent with and checked against. Never
   * fragments (IPV6_PMTUDISC_DO: larger than the known path MTU fails with EMSGSIZE). No
   * SO_REUSEADDR: a port in use fails with EADDRINUSE.
   */
  udp6Open(port: number, device: string, rcvbuf: number, sndbuf: number): { fd: number; port: number; ifindex: number };
  /**
   * recvBatch6 is recvBatch for an IPv6 socket: datagram i's source is addrs[16*i, 16*i + 16),
   * its scope (interface index of a link-local source, else 0) scopes[i], its port ports[i].
   */
  recvBatch6(
    fd: number,
    buf: Buffer,
    offset: number,
    stride: number,
    max: number,
    lengths: Int32Array,
    addrs: Uint8Array,
    scopes: Uint32Array,
    ports: Uint16Array,
  ): number;
  /** sendBatch6 is sendBatch (without GSO) for an IPv6 socket: addresses, scopes and ports as in recvBatch6. */
  sendBatch6(
    fd: number,
    buf: Buffer,
    offsets: Int32Array,
    lengths: Int32Array,
    addrs: Uint8Array,
    scopes: Uint32Array,
    ports: Uint16Array,
    count: number,
  ): number;
  /** close closes an fd; returns 0 or -errno and never throws for a bad fd. */
  close(fd: number): number;
  /** nlOpen opens a blocking NETLINK_ROUTE socket with a 1 s receive timeout; throws NativeSystemError. */
  nlOpen(): number;
  /** nlSend sends buf[0, len) to the kernel as one datagram; returns len or -errno. */
  nlSend(fd: number, buf: Buffer, len: number): number;
  /** nlRecv receives one datagram into buf; returns its length, or -errno (-EAGAIN after the 1 s timeout). */
  nlRecv(fd: number, buf: Buffer): number;
  /** copyBytes memmoves `len` bytes from src[srcOff] to dst[dstOff] without allocating; throws TypeError out of bounds. */
  copyBytes(src: Buffer, srcOff: number, dst: Buffer, dstOff: number, len: number): void;

  // ---- AEAD (issue #13; native/weft_native.c "AEAD" has the full contract) ----
  /**
   * aeadKey keys one AEAD context (the EVP_CIPHER_CTX pair is created here once and reused by
   * every call). `key` is 32 bytes; `iv` is the 12-byte static IV (default zero): the nonce of
   * counter c is iv XOR (4 zero bytes || c as 8 bytes big-endian). Throws TypeError/RangeError.
   */
  aeadKey(cipher: NativeAeadCipher, key: Uint8Array, iv?: Uint8Array): NativeAeadKey;
  /** aeadFree wipes and frees the context now (otherwise at garbage collection); later use throws TypeError. */
  aeadFree(key: NativeAeadKey): void;
  /**
   * aeadSeal encrypts buf[off + aadLen, off + len) in place, authenticating buf[off, off + aadLen),
   * and writes the 16-byte tag at buf[off + len]; returns len + 16. Throws RangeError out of bounds
   * or for a counter outside [0, 2^53).
   */
  aeadSeal(key: NativeAeadKey, buf: Buffer, off: number, len: number, aadLen: number, counter: number): number;
  /** aeadOpen checks and decrypts a sealed packet of `len` bytes (tag included) in place; returns len - 16, or -1 when it does not authenticate. */
  aeadOpen(key: NativeAeadKey, buf: Buffer, off: number, len: number, aadLen: number, counter: number): number;
  /**
   * aeadSealBatch seals packets 0..count-1 (packet i: buf[offsets[i]], lengths[i] bytes of AAD +
   * plaintext; its tag goes after it). ctrAt >= 0 writes counters[i] big-endian at packet + ctrAt
   * (inside the AAD); maskAt >= 0 authenticates that AAD byte as zero (a field relays change).
   * Validates everything first and throws RangeError without touching any packet; returns count.
   * `first` (default 0) makes the batch entries first..first+count-1 of the parallel arrays, so
   * one datagram list can be sealed in runs, one run per key, without subarray views.
   */
  aeadSealBatch(
    key: NativeAeadKey,
    buf: Buffer,
    offsets: Int32Array,
    lengths: Int32Array,
    counters: Float64Array,
    count: number,
    aadLen: number,
    ctrAt: number,
    maskAt: number,
    first?: number,
  ): number;
  /**
   * aeadOpenBatch opens packets 0..count-1 (lengths include the tag) in place: results[i] = 1
   * opened, 0 failed (bad tag, too short, counter >= 2^53; the packet is left unchanged); never throws for one. With ctrAt >= 0
   * the counter is read from the packet into counters[i] (-1 if unreadable). Returns how many
   * opened. `first` as for aeadSealBatch (results are indexed like the other arrays).
   */
  aeadOpenBatch(
    key: NativeAeadKey,
    buf: Buffer,
    offsets: Int32Array,
    lengths: Int32Array,
    counters: Float64Array,
    count: number,
    aadLen: number,
    ctrAt: number,
    maskAt: number,
    results: Uint8Array,
    first?: number,
  ): number;
  /** AEAD_TAG_LEN is the tag length (16); AEAD_KEY_LEN the key length (32). */
  readonly AEAD_TAG_LEN: number;
  readonly AEAD_KEY_LEN: number;

  /** IFF_* are the TUNSETIFF flags tunOpen combines (exported for diagnostics). */
  readonly IFF_TUN: number;
  readonly IFF_TAP: number;
  readonly IFF_NO_PI: number;
  readonly IFF_MULTI_QUEUE: number;
  readonly IFF_VNET_HDR: number;
  /** TUN_F_* are the TUNSETOFFLOAD flags: checksum offload and the segmentation offloads that need it. */
  readonly TUN_F_CSUM: number;
  readonly TUN_F_TSO4: number;
  readonly TUN_F_TSO6: number;
  readonly TUN_F_TSO_ECN: number;
  readonly TUN_F_UFO: number;
  /** TUN_F_USO4/6 exist only when the addon was built against kernel headers >= 6.2. */
  readonly TUN_F_USO4?: number;
  readonly TUN_F_USO6?: number;
  /** VIRTIO_NET_HDR_LEN is sizeof(struct virtio_net_hdr) = 10. */
  readonly VIRTIO_NET_HDR_LEN: number;
  /** VIRTIO_NET_HDR_MRG_RXBUF_LEN is sizeof(struct virtio_net_hdr_mrg_rxbuf) = 12. */
  readonly VIRTIO_NET_HDR_MRG_RXBUF_LEN: number;
  /** MMSG_CHUNK is how many datagrams one recvmmsg/sendmmsg call handles; larger batches are chunked. */
  readonly MMSG_CHUNK: number;
  /** UDP_GSO_SEGMENTS_MAX is the most segments one UDP GSO train may have. */
  readonly UDP_GSO_SEGMENTS_MAX: number;
}

/** NATIVE_ADDON_RELPATH is where `npm run build:native` puts the addon, relative to the package root. */
export const NATIVE_ADDON_RELPATH = 'router/tun/native/build/Release/weft_native.node';

const require = createRequire(import.meta.url);
const here = dirname(fileURLToPath(import.meta.url));
let cached: NativeAddon | undefined;

/**
 * nativeAddonCandidates lists where the addon may be, nearest first: beside this file when it
 * runs from source (router/tun/native.ts), then the package root found by walking up (covers
 * dist/router/tun/native.js and an installed package).
 */
export function nativeAddonCandidates(): string[] {
  const out = [join(here, 'native', 'build', 'Release', 'weft_native.node')];
  let dir = here;
  for (let i = 0; i < 5; i++) {
    dir = dirname(dir);
    out.push(join(dir, NATIVE_ADDON_RELPATH));
  }
  return [...new Set(out.map((p) => resolve(p)))];
}

/** isNativeSystemError narrows a thrown value to the addon's system-call error. */
export function isNativeSystemError(err: unknown): err is NativeSystemError {
  return err instanceof Error && typeof (err as { code?: unknown }).code === 'string' && 'syscall' in err;
}

/**
 * loadNative returns the addon, loading it once per process (thread). It throws TunOpenError
 * ("native addon not built: run `npm run build:native`") when no candidate exists, and
 * TunOpenError with the loader's reason when the file exists but does not load (e.g. it was
 * built for another Node ABI). A failure is not cached, so a later build is picked up.
 */
export function loadNative(): NativeAddon {
  if (cached !== undefined) return cached;
  const path = nativeAddonCandidates().find((p) => existsSync(p));
  if (path === undefined) throw new TunOpenError('native addon not built: run `npm run build:native`');
  try {
    cached = require(path) as NativeAddon;
  } catch (err) {
    throw new TunOpenError(
      `native addon at ${path} does not load (${errorMessage(err).split('\n')[0]}): run \`npm run build:native\``,
      { cause: err },
    );
  }
  return cached;
}

/** tryLoadNative is loadNative that returns undefined instead of throwing (to pick a fallback or skip tests). */
export function tryLoadNative(): NativeAddon | undefined {
  try {
    return loadNative();
  } catch {
    return undefined;
  }
}

/**
 * FdWatcher is the readiness watcher of one native fd (TUN device or UDP socket): `set(cb)`
 * starts the addon's libuv poll watcher once and swaps the callback without re-creating it;
 * `set(undefined)` stops watching; after `close()` the callback never runs again.
 */
export class FdWatcher {
  #watch: NativeWatchHandle | undefined;
  #cb: (() => void) | undefined;
  #closed = false;
  /** #dispatch is created once so installing a new callback never re-creates the watcher. */
  readonly #dispatch = (): void => {
    if (this.#cb !== undefined) this.#cb();
  };

  constructor(
    private readonly native: NativeAddon,
    private readonly fd: number,
  ) {}

  /** set installs the readiness callback, or with undefined stops watching. */
  set(cb: (() => void) | undefined): void {
    this.#cb = cb;
    if (this.#closed) return;
    if (cb !== undefined && this.#watch === undefined) {
      this.#watch = this.native.watch(this.fd, this.#dispatch);
    } else if (cb === undefined && this.#watch !== undefined) {
      this.native.unwatch(this.#watch);
      this.#watch = undefined;
    }
  }

  /** close stops the watcher for good (the fd itself belongs to the caller); idempotent. */
  close(): void {
    this.set(undefined);
    this.#closed = true;
  }
}
