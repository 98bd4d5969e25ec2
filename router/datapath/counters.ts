/**
 * Drop names every reason the datapath discards a packet. Each has a counter; status and
 * /metrics report them by name.
 */
export const Drop = {
  /** NoRoute: no peer announces the destination address. */
  NoRoute: 0,
  /** Malformed: the inner packet is not a well-formed IPv4 packet. */
  Malformed: 1,
  /** Truncated: the datagram is shorter than its headers say, or was cut by the receive buffer. */
  Truncated: 2,
  /** BadMagic/BadVersion/BadType: not a sleeve datagram we understand. */
  BadMagic: 3,
  BadVersion: 4,
  BadType: 5,
  /** BadVni: a VXLAN datagram without the I flag or for another VNI. */
  BadVni: 6,
  /** NotForUs: a sleeve datagram addressed to a peer we know no route to. */
  NotForUs: 7,
  /** UnknownPeer: a sleeve datagram from a peer we have no control connection with. */
  UnknownPeer: 8,
  /** NotForOurMac: a VXLAN frame to a unicast MAC that is not ours. */
  NotForOurMac: 9,
  /** UnsupportedEtherType: a VXLAN frame that is neither IPv4 nor ARP. */
  UnsupportedEtherType: 10,
  /**
   * ArpNotOurs: an ARP packet that needs no answer from us (not an error): a request for an
   * address this router does not serve, or a reply (learned from first where that is allowed).
   */
  ArpNotOurs: 11,
  /** TunWrite: the TUN device did not accept the packet (queue full or rejected). */
  TunWrite: 12,
  /** UdpSend: the UDP socket did not accept the datagram (buffer full or unreachable). */
  UdpSend: 13,
  /** TooBig: an inner packet too large for the framing (over 65535 with headers). */
  TooBig: 14,
  /** Loop: a packet whose destination is this router itself arrived from the TUN. */
  Loop: 15,
  /** GsoUnsupported: a TCP super-packet arrived for a TUN device without virtio-net headers. */
  GsoUnsupported: 16,
  /** TtlExceeded: a sleeve datagram to relay had crossed too many relays (a transient loop). */
  TtlExceeded: 17,
  /** NotIPv4: an IPv6 packet from the TUN device (the overlay carries IPv4 only, for now). */
  NotIPv4: 18,
  /**
   * PathMtu: an inner packet (or a super-packet's segment) with DF set that does not fit the path
   * to its peer; an ICMP "fragmentation needed" with the path's MTU went back to its sender.
   */
  PathMtu: 19,
  /**
   * NotFromPeer: a datagram from an underlay endpoint that is not a connected peer's (or, for a
   * relayed one, naming a source we have no route to); without a password, peers are known by
   * their endpoint, so a stranger's datagram is never delivered or answered.
   */
  NotFromPeer: 20,
  /** Spoofed: a datagram from a peer's endpoint claiming to come directly from another peer. */
  Spoofed: 21,
  /**
   * Auth: a sleeve datagram from a peer we hold data keys for (a password is set) that did not
   * authenticate: tampered, forged, under a wrong key, or sent in the clear.
   */
  Auth: 22,
  /** Replay: an authentic sealed datagram already received, or too old for the replay window. */
  Replay: 23,
  /** NoKey: a datagram for a peer whose data keys were closed (its connection went) is not sent in the clear. */
  NoKey: 24,
} as const;
export type Drop = (typeof Drop)[keyof typeof Drop];

/** DROP_NAMES lists the snake_case name of each Drop, indexed by its value (for metrics labels). */
export const DROP_NAMES: readonly string[] = [
  'no_route',
  'malformed',
  'truncated',
  'bad_magic',
  'bad_version',
  'bad_type',
  'bad_vni',
  'not_for_us',
  'unknown_peer',
  'not_for_our_mac',
  'unsupported_ethertype',
  'arp_not_ours',
  'tun_write',
  'udp_send',
  'too_big',
  'loop',
  'gso_unsupported',
  'ttl_exceeded',
  'not_ipv4',
  'too_big_for_path',
  'not_from_peer',
  'spoofed',
  'auth',
  'replay',
  'no_key',
];

/**
 * Counters are the datapath's plain numeric counters, bumped per packet and read by status.
 * Only the datapath writes them; readers take a snapshot with `snapshot()`.
 */
export class Counters {
  /** tunRxPackets/Bytes: read from the TUN device (leaving the host towards the overlay). */
  tunRxPackets = 0;
  tunRxBytes = 0;
  /** tunTxPackets/Bytes: written to the TUN device (arriving from the overlay). */
  tunTxPackets = 0;
  tunTxBytes = 0;
  /** udpRxPackets/Bytes: datagrams received on the data ports. */
  udpRxPackets = 0;
  udpRxBytes = 0;
  /** udpTxPackets/Bytes: datagrams sent on the data ports. */
  udpTxPackets = 0;
  udpTxBytes = 0;
  /** arpReplies: ARP replies sent to VXLAN peers for addresses we serve. */
  arpReplies = 0;
  /** bundled: packets sent as an extra frame in another packet's sleeve datagram. */
  bundled = 0;
  /** relayed: sleeve datagrams forwarded for other peers. */
  relayed = 0;
  /** heartbeats: data-path heartbeats received (acks included). */
  heartbeats = 0;
  /** learned: VXLAN endpoints learned from received traffic. */
  learned = 0;
  /** segmented: TCP super-packets read from the TUN and cut into MSS-sized segments. */
  segmented = 0;
  /** gsoTrains: sends that carried several datagrams as one UDP GSO train. */
  gsoTrains = 0;
  /** groTrains: received coalesced UDP GRO trains. */
  groTrains = 0;
  /** coalesced: TCP segments merged into a larger packet before the TUN write (GRO in userspace). */
  coalesced = 0;
  /** fragmented: inner packets without DF cut into IP fragments to fit the path. */
  fragmented = 0;
  /** icmpFragNeeded: ICMP "fragmentation needed" messages written back to local senders. */
  icmpFragNeeded = 0;
  /** batches: readiness wake-ups served (TUN and UDP), for average batch size. */
  tunBatches = 0;
  udpBatches = 0;
  /** drops counts discarded packets by Drop reason. */
  readonly drops = new Float64Array(DROP_NAMES.length);

  /** drop counts `n` packets dropped for `reason`. */
  drop(reason: Drop, n = 1): void {
    this.drops[reason] = (this.drops[reason] as number) + n;
  }

  /** dropped returns the count for one reason. */
  dropped(reason: Drop): number {
    return this.drops[reason] as number;
  }

  /** snapshot returns a JSON-safe copy. */
  snapshot(): CountersSnapshot {
    const drops: Record<string, number> = {};
    for (let i = 0; i < DROP_NAMES.length; i++) drops[DROP_NAMES[i] as string] = this.drops[i] as number;
    return {
      tunRxPackets: this.tunRxPackets,
      tunRxBytes: this.tunRxBytes,
      tunTxPackets: this.tunTxPackets,
      tunTxBytes: this.tunTxBytes,
      udpRxPackets: this.udpRxPackets,
      udpRxBytes: this.udpRxBytes,
      udpTxPackets: this.udpTxPackets,
      udpTxBytes: this.udpTxBytes,
      arpReplies: this.arpReplies,
      relayed: this.relayed,
      bundled: this.bundled,
      heartbeats: this.heartbeats,
      learned: this.learned,
      segmented: this.segmented,
      gsoTrains: this.gsoTrains,
      groTrains: this.groTrains,
      coalesced: this.coalesced,
      fragmented: this.fragmented,
      icmpFragNeeded: this.icmpFragNeeded,
      tunBatches: this.tunBatches,
      udpBatches: this.udpBatches,
      drops,
    };
  }
}

/** CountersSnapshot is a JSON-safe copy of Counters. */
export interface CountersSnapshot {
  tunRxPackets: number;
  tunRxBytes: number;
  tunTxPackets: number;
  tunTxBytes: number;
  udpRxPackets: number;
  udpRxBytes: number;
  udpTxPackets: number;
  udpTxBytes: number;
  arpReplies: number;
  relayed: number;
  bundled: number;
  heartbeats: number;
  learned: number;
  segmented: number;
  gsoTrains: number;
  groTrains: number;
  coalesced: number;
  fragmented: number;
  icmpFragNeeded: number;
  tunBatches: number;
  udpBatches: number;
  drops: Record<string, number>;
}
