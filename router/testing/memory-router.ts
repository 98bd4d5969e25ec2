import { type Clock, realClock, VirtualClock } from '../../common/clock.js';
import type { PeerName, PeerUid } from '../../common/types.js';
import { parseCidr } from '../../common/types.js';
import { MemoryUdpNet } from '../conn/memory-udp.js';
import { Router, type RouterOptions } from '../router.js';
import { MemoryTun } from '../tun/memory.js';

/** LOOPBACK is 127.0.0.1: control connections are real TCP on loopback, data goes through MemoryUdpNet. */
export const LOOPBACK = 0x7f000001;

/** MemoryRouter is a Router whose TUN device and data sockets are in-process fakes. */
export interface MemoryRouter {
  router: Router;
  tun: MemoryTun;
}

/** TURN_MS is how far virtual time moves per event-loop turn while a virtual MemoryMesh runs. */
export const TURN_MS = 10;

/** MemoryMeshOptions configure a MemoryMesh. */
export interface MemoryMeshOptions {
  /**
   * virtual runs the routers on one VirtualClock (default false: the real clock). Virtual time then
   * moves TURN_MS per event-loop turn while the mesh has routers, so timers (heartbeats, timeouts,
   * gossip, IPAM retries) fire in a deterministic order however slow the machine is, and waiting
   * (`until`, `sleep`) counts virtual time: nothing sleeps or reads the wall clock.
   */
  virtual?: boolean;
}

/**
 * MemoryMesh builds Routers in one process without root: each gets a MemoryTun and MemoryUdp
 * sockets on one MemoryUdpNet (at 127.0.0.1, distinct ports), and real TCP control connections on
 * 127.0.0.1 port 0. `stop()` stops them all.
 */
export class MemoryMesh {
  readonly net = new MemoryUdpNet();
  readonly routers: MemoryRouter[] = [];
  /** clock is what the routers take time and timers from. */
  readonly clock: Clock;
  private readonly virtual: VirtualClock | undefined;
  private driving = false;

  constructor(opts: MemoryMeshOptions = {}) {
    this.virtual = opts.virtual === true ? new VirtualClock() : undefined;
    this.clock = this.virtual ?? realClock;
  }

  /** add starts a router named `02:00:00:00:00:<n>`; `opts` override RouterOptions. */
  async add(opts: Partial<RouterOptions> = {}): Promise<MemoryRouter> {
    const n = this.routers.length + 1;
    const tun = new MemoryTun({ name: `mem${n}` });
    const router = new Router({
      name: `02:00:00:00:00:${n.toString(16).padStart(2, '0')}` as PeerName,
      nickname: `r${n}`,
      uid: BigInt(1000 + n) as PeerUid,
      port: 0,
      listenHost: '127.0.0.1',
      vxlanPort: 0,
      vni: 42,
      encap: 'sleeve',
      mtu: 1400,
      device: `mem${n}`,
      // Tests address hosts in 10.32.0.0/12 by hand (announced as /32s); IPAM's own range is elsewhere
      // unless a test asks for it.
      ipallocRange: parseCidr('10.96.0.0/12'),
      tun,
      sleeveConn: this.net.open({ addr: LOOPBACK }),
      vxlanConn: this.net.open({ addr: LOOPBACK }),
      ...(this.virtual === undefined ? {} : { clock: this.virtual }),
      ...opts,
    });
    this.drive();
    await router.start();
    const r = { router, tun };
    this.routers.push(r);
    return r;
  }

  /** stop stops every router (and, on virtual time, the clock's driver). */
  async stop(): Promise<void> {
    for (const r of this.routers) await r.router.stop();
    this.routers.length = 0;
    this.driving = false;
  }

  /**
   * until waits until `cond` holds, checking once per event-loop turn; rejects with `what` after
   * `ms` (virtual ms on a virtual mesh).
   */
  async until(cond: () => boolean, what: string, ms = 5_000): Promise<void> {
    const deadline = this.clock.now() + ms;
    while (!cond()) {
      if (this.clock.now() > deadline) throw new Error(`timed out waiting for ${what}`);
      await (this.virtual === undefined ? new Promise((r) => setTimeout(r, 10)) : turn());
    }
  }

  /** sleep waits `ms` (virtual ms on a virtual mesh). */
  async sleep(ms: number): Promise<void> {
    const at = this.clock.now() + ms;
    await this.until(() => this.clock.now() >= at, 'the time to pass', ms + 1);
  }

  /** drive moves virtual time TURN_MS per event-loop turn until stop(). */
  private drive(): void {
    const clock = this.virtual;
    if (clock === undefined || this.driving) return;
    this.driving = true;
    const step = () => {
      if (!this.driving) return;
      clock.advance(TURN_MS);
      setImmediate(step);
    };
    setImmediate(step);
  }
}

/** turn resolves after one event-loop turn (I/O polled once). */
function turn(): Promise<void> {
  return new Promise((r) => setImmediate(r));
}

/** ipv4Packet builds a UDP-in-IPv4 packet of `len` bytes from `src` to `dst` (host-order integers). */
export function ipv4Packet(len: number, src: number, dst: number, fill = 0): Buffer {
  const b = Buffer.alloc(len, fill);
  b[0] = 0x45;
  b[1] = 0;
  b.writeUInt16BE(len, 2);
  b.writeUInt16BE(0, 4);
  b.writeUInt16BE(0, 6);
  b[8] = 64;
  b[9] = 17;
  b.writeUInt16BE(0, 10);
  b.writeUInt32BE(src >>> 0, 12);
  b.writeUInt32BE(dst >>> 0, 16);
  return b;
}
