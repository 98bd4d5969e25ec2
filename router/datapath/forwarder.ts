/**
 * Forwarder is the data plane: it moves packets between the TUN device and the UDP data sockets.
 * The work is split the way nebula splits it, one direction per file:
 *
 *   inside.ts  (host → overlay)   TUN readable → readBatch at HEADROOM → per packet: validate,
 *              look up the hop → write the sleeve or VXLAN prefix in place; cut a TCP super-packet
 *              into MSS-sized segments, one datagram each, sent as one UDP GSO train; answer a
 *              packet too big for the path with ICMP "fragmentation needed" (or fragment it when
 *              DF is clear) → one sendBatch per socket for the whole batch.
 *
 *   outside.ts (overlay → host)   UDP readable → recvBatch (UDP GRO trains split back into
 *              datagrams) → per datagram: validate, check who sent it → note each inner packet in
 *              place → TunQueue merges consecutive TCP segments into one GSO super-packet → one
 *              writeBatch to the TUN. Sleeve datagrams for other peers are relayed.
 *
 *   heartbeats.ts                 data-path heartbeats, acks and path MTU probes.
 *
 * Everything per packet is synchronous and allocation-free: buffers and index arrays are
 * preallocated here, headers are read and written in place, and bad packets become a counted
 * Drop, never an exception. The control plane changes routing only by assigning `fib` (and a
 * hop's `pmtu`).
 */
import type { Logger } from '../../common/log.js';
import { noopLogger } from '../../common/log.js';
import type { PeerName } from '../../common/types.js';
import type { PacketConn } from '../conn/packet-conn.js';
import { UDP_PAYLOAD_MAX, UNDERLAY_MTU_DEFAULT } from '../constants.js';
import type { TunDevice } from '../tun/device.js';
import { Counters } from './counters.js';
import { type Encap, Fib, type Hop, peerNameHi, peerNameLo } from './fib.js';
import { Heartbeats } from './heartbeats.js';
import { Inside } from './inside.js';
import { LearnedEndpoints } from './learned.js';
import { Outside } from './outside.js';

/**
 * ControlDatagram is a heartbeat or heartbeat ack addressed to us, handed to the control plane
 * (the forwarder has already answered a heartbeat with an ack).
 */
export interface ControlDatagram {
  type: number;
  srcHi: number;
  srcLo: number;
  /** addr/port: where the datagram came from on the underlay. */
  addr: number;
  port: number;
  /** stamp is the timestamp the heartbeat's sender put in (echoed back in the ack). */
  stamp: number;
  /**
   * size is, for a heartbeat, its datagram's length as received; for an ack, the length of the
   * heartbeat it answers as the peer received it (0 from peers that do not say): a path MTU
   * probe of that size got through.
   */
  size: number;
  /** overlay is the encapsulation it arrived in: sleeve, or VXLAN (a heartbeat frame inside VXLAN). */
  overlay: Encap;
}

/** ForwarderOptions configures a Forwarder. */
export interface ForwarderOptions {
  /** tun is the overlay device; the Forwarder reads and writes it but does not close it. */
  tun: TunDevice;
  /** sleeve is the socket bound to the sleeve port. */
  sleeve: PacketConn;
  /** vxlan is the socket bound to the VXLAN port; without it VXLAN is neither sent nor received. */
  vxlan?: PacketConn;
  /** localName is this router's peer name; its 48 bits double as our inner MAC for VXLAN. */
  localName: PeerName;
  /** vni is the VXLAN network identifier we send and accept. */
  vni: number;
  /** vxlanPort is the UDP port learned kernel VXLAN endpoints listen on. */
  vxlanPort: number;
  counters?: Counters;
  log?: Logger;
  /** onControl receives non-data sleeve datagrams (rare; may allocate). */
  onControl?: (d: ControlDatagram) => void;
  /**
   * vnetHdr says the TUN device carries a virtio-net header before every packet (IFF_VNET_HDR),
   * so TCP super-packets and partial checksums may be read from it and written to it.
   */
  vnetHdr?: boolean;
  /**
   * underlayMtu is the MTU of the underlay device: the path MTU assumed for hops nobody probed
   * (learned kernel VXLAN endpoints) and the largest datagram bundling makes. Default 1500.
   */
  underlayMtu?: number;
  /**
   * bundleBytes caps the sleeve datagrams (UDP payload) that bundle several small packets, below
   * what the path MTU allows; 0 turns bundling off. Default: the path's limit.
   */
  bundleBytes?: number;
  /** nowMs is the clock used for learning and ICMP rate limits (tests pass a fake). */
  nowMs?: () => number;
}

/** Forwarder moves packets between a TUN device and the data sockets; see the file comment. */
export class Forwarder {
  /** fib is the forwarding snapshot; the control plane replaces it with one assignment. */
  fib: Fib = new Fib();
  /** learned holds VXLAN endpoints learned from received traffic. */
  readonly learned: LearnedEndpoints;
  readonly counters: Counters;

  readonly tun: TunDevice;
  readonly sleeve: PacketConn;
  readonly vxlan: PacketConn | undefined;
  readonly log: Logger;
  readonly vni: number;
  readonly vxlanPort: number;
  readonly onControl: ((d: ControlDatagram) => void) | undefined;
  readonly nowMs: () => number;
  /** nameHi/nameLo are our peer name's 48 bits (and our inner MAC for VXLAN). */
  readonly nameHi: number;
  readonly nameLo: number;
  /** vnet is the virtio-net header length when the TUN device has them (10), else 0. */
  readonly vnet: number;
  /** bundleBytes caps a bundled sleeve datagram. */
  readonly bundleBytes: number;

  readonly inside: Inside;
  readonly outside: Outside;
  readonly heartbeats: Heartbeats;
  private running = false;

  constructor(opts: ForwarderOptions) {
    this.tun = opts.tun;
    this.sleeve = opts.sleeve;
    this.vxlan = opts.vxlan;
    this.vni = opts.vni;
    this.vxlanPort = opts.vxlanPort;
    this.counters = opts.counters ?? new Counters();
    this.log = opts.log ?? noopLogger;
    this.onControl = opts.onControl;
    this.nowMs = opts.nowMs ?? Date.now;
    this.nameHi = peerNameHi(opts.localName);
    this.nameLo = peerNameLo(opts.localName);
    this.vnet = opts.vnetHdr === true ? 10 : 0;
    const underlayMtu = opts.underlayMtu ?? UNDERLAY_MTU_DEFAULT;
    this.bundleBytes = opts.bundleBytes ?? UDP_PAYLOAD_MAX;
    this.learned = new LearnedEndpoints(opts.vxlanPort, undefined, underlayMtu);
    this.heartbeats = new Heartbeats(this);
    this.inside = new Inside(this);
    this.outside = new Outside(this);
  }

  /** start begins forwarding (installs readiness callbacks); idempotent. */
  start(): void {
    if (this.running) return;
    this.running = true;
    this.tun.onReadable(this.inside.onTunReadable);
    this.sleeve.onReadable(this.outside.onSleeveReadable);
    this.vxlan?.onReadable(this.outside.onVxlanReadable);
  }

  /** stop removes the readiness callbacks; the devices stay open (their owner closes them). */
  stop(): void {
    if (!this.running) return;
    this.running = false;
    this.tun.onReadable(undefined);
    this.sleeve.onReadable(undefined);
    this.vxlan?.onReadable(undefined);
  }

  /** onTunReadable drains the TUN device (the inside path); exposed for benches and tests. */
  get onTunReadable(): () => void {
    return this.inside.onTunReadable;
  }

  /**
   * sendHeartbeat sends a data-path heartbeat to a directly connected peer, in sleeve framing to
   * the hop's sleeve port, padded to `size` bytes when that is larger (a path MTU probe: the size
   * is the whole IP datagram's, as the path MTU is). Control plane: twice a second per peer.
   */
  sendHeartbeat(hop: Hop, stamp: number, size = 0): boolean {
    return this.heartbeats.sendHeartbeat(hop, stamp, size);
  }

  /**
   * sendVxlanHeartbeat proves the VXLAN path to a Weft peer: the same heartbeat, carried in a
   * VXLAN frame with EtherType ETHERTYPE_WEFT_HEARTBEAT to the peer's VXLAN port. Kernel vxlan
   * devices drop such frames; Weft peers ack them over VXLAN.
   */
  sendVxlanHeartbeat(hop: Hop, vxlanPort: number, stamp: number): boolean {
    return this.heartbeats.sendVxlanHeartbeat(hop, vxlanPort, stamp);
  }

  /** offload says which UDP offloads the data sockets use (for status). */
  offload(): { gso: boolean; gro: boolean } {
    return { gso: this.sleeve.gso, gro: this.sleeve.gro };
  }
}

export { ETHERTYPE_WEFT_HEARTBEAT } from './heartbeats.js';
