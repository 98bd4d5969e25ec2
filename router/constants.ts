/**
 * Protocol and implementation constants. Units are in the names. Everything a wire format or a
 * default depends on lives here, split into what a specification fixes and what we chose.
 */

// ---- Specification (RFCs and Linux ABI) ----

/** IPV4_HEADER_MIN_LEN is the length of an IPv4 header without options (RFC 791). */
export const IPV4_HEADER_MIN_LEN = 20;
/** UDP_HEADER_LEN is the UDP header length (RFC 768). */
export const UDP_HEADER_LEN = 8;
/** ETH_HEADER_LEN is an untagged Ethernet II header: dst MAC, src MAC, EtherType. */
export const ETH_HEADER_LEN = 14;
/** ETHERTYPE_IPV4 and ETHERTYPE_ARP are the EtherTypes we handle. */
export const ETHERTYPE_IPV4 = 0x0800;
export const ETHERTYPE_ARP = 0x0806;
/** ARP_IPV4_LEN is the length of an Ethernet/IPv4 ARP packet (RFC 826). */
export const ARP_IPV4_LEN = 28;
/** VXLAN_HEADER_LEN is the 8-byte VXLAN header (RFC 7348 §5). */
export const VXLAN_HEADER_LEN = 8;
/** VXLAN_FLAG_I is the "valid VNI" flag in the first byte of the VXLAN header. */
export const VXLAN_FLAG_I = 0x08;
/** VXLAN_IANA_PORT is the IANA port for VXLAN; Weft defaults to VXLAN_PORT instead. */
export const VXLAN_IANA_PORT = 4789;
/** VXLAN_VNI_MAX is the largest 24-bit VNI. */
export const VXLAN_VNI_MAX = 0xffffff;

// ---- Weft wire formats ----

/** SLEEVE_MAGIC is the first byte of every sleeve datagram ('W'). */
export const SLEEVE_MAGIC = 0x57;
/** SLEEVE_VERSION is the sleeve framing version we speak; datagrams with another are dropped. */
export const SLEEVE_VERSION = 1;
/** SLEEVE_HEADER_LEN: magic, version, type, ttl, source peer (6), destination peer (6). */
export const SLEEVE_HEADER_LEN = 16;
/** SLEEVE_FRAME_HEADER_LEN is the 2-byte length before each inner IP packet in a sleeve datagram. */
export const SLEEVE_FRAME_HEADER_LEN = 2;
/** SLEEVE_TTL_INITIAL bounds how many relays a sleeve datagram may cross. */
export const SLEEVE_TTL_INITIAL = 8;

/** VNET_HDR_BYTES is the virtio-net header every sleeve frame carries (offload state: GSO, partial checksum). */
export const VNET_HDR_BYTES = 10;
/**
 * SLEEVE_OVERHEAD_BYTES is what sleeve adds to one inner IPv4 packet on the underlay: outer IPv4
 * (20) + UDP (8) + sleeve header (16) + frame length (2) + virtio-net header (10) = 56.
 */
export const SLEEVE_OVERHEAD_BYTES =
  IPV4_HEADER_MIN_LEN + UDP_HEADER_LEN + SLEEVE_HEADER_LEN + SLEEVE_FRAME_HEADER_LEN + VNET_HDR_BYTES;
/** VXLAN_OVERHEAD_BYTES is what VXLAN adds: outer IPv4 (20) + UDP (8) + VXLAN (8) + inner Ethernet (14) = 50. */
export const VXLAN_OVERHEAD_BYTES = IPV4_HEADER_MIN_LEN + UDP_HEADER_LEN + VXLAN_HEADER_LEN + ETH_HEADER_LEN;
/**
 * CRYPTO_RESERVE_BYTES is kept free for the encrypted sleeve (an 8-byte nonce counter and a
 * 16-byte AEAD tag), so turning encryption on never changes the MTU containers were given.
 */
export const CRYPTO_RESERVE_BYTES = 24;
/**
 * ENCAP_OVERHEAD_MAX is the most Weft adds to an inner IP packet on the underlay: the larger of
 * sleeve and VXLAN plus the encryption reserve, 56 + 24 = 80. The default overlay MTU is the
 * underlay MTU minus this (1420 on a 1500-byte underlay, as WireGuard's default), so every inner
 * packet of full size fits one datagram on the underlay whatever the encapsulation.
 */
export const ENCAP_OVERHEAD_MAX = Math.max(SLEEVE_OVERHEAD_BYTES, VXLAN_OVERHEAD_BYTES) + CRYPTO_RESERVE_BYTES;
/** UDP_PAYLOAD_MAX is the largest UDP payload in one IPv4 datagram (65535 - 20 - 8). */
export const UDP_PAYLOAD_MAX = 65_507;

// ---- Ports and defaults ----

/** CONTROL_PORT is the TCP port of control connections; sleeve data uses the same number over UDP. */
export const CONTROL_PORT = 6783;
/** SLEEVE_PORT is the default UDP port for sleeve data. */
export const SLEEVE_PORT = 6783;
/** VXLAN_PORT is Weft's default VXLAN UDP port (the kernel's vxlan device must use the same dstport). */
export const VXLAN_PORT = 6784;
/** VXLAN_VNI_DEFAULT is the default VXLAN network identifier. */
export const VXLAN_VNI_DEFAULT = 0x5746; // "WF"
/** HTTP_ADDR is the default HTTP API address: loopback only. */
export const HTTP_ADDR = '127.0.0.1:6784';
/** CONTAINER_GRACE_MS: an attached container gone without detach keeps its address this long (it may come back). */
export const CONTAINER_GRACE_MS = 30_000;
/** CONTAINER_CHECK_MS is how often the router looks for attached containers that went away. */
export const CONTAINER_CHECK_MS = 2_000;

/** IPALLOC_RANGE is the default cluster address range. */
export const IPALLOC_RANGE = '10.32.0.0/12';
/** DNS_DOMAIN is the default DNS domain. */
export const DNS_DOMAIN = 'weft.local';
/** TUN_DEVICE_NAME is the default name of the router's TUN device. */
export const TUN_DEVICE_NAME = 'weft';
/** MTU_MIN and MTU_MAX bound the overlay MTU we accept (IPv4 minimum 576; TUN maximum 65535). */
export const MTU_MIN = 576;
export const MTU_MAX = 65535;
/** UNDERLAY_MTU_DEFAULT is assumed when the underlay MTU cannot be read. */
export const UNDERLAY_MTU_DEFAULT = 1500;
/** PMTU_MIN is the smallest path MTU Weft probes down to (RFC 791: every IPv4 host takes 576). */
export const PMTU_MIN = 576;

// ---- Implementation choices ----

/**
 * HEADROOM_BYTES is reserved before every packet read from TUN so that any encapsulation header
 * (sleeve 18, VXLAN + Ethernet 22) is written in place in front of it. 64 keeps slots aligned.
 */
export const HEADROOM_BYTES = 64;
/**
 * SLOT_BYTES is one pool slot: headroom plus the largest packet a TUN device can hand us (a
 * 65535-byte super-packet and its virtio-net header), rounded to 64.
 */
export const SLOT_BYTES = HEADROOM_BYTES + 65_600;
/**
 * GSO_MAX_BYTES caps the TCP super-packets containers' veths build (attach sets their
 * gso_max_size) and those the router merges on receive, so the kernel forwards them between the
 * TUN device and a container whole.
 */
export const GSO_MAX_BYTES = 62_000;
/** BATCH_MAX is how many packets one readiness wake-up drains at most (per direction). */
export const BATCH_MAX = 64;
/** UDP_RCVBUF_BYTES and UDP_SNDBUF_BYTES size the data sockets' kernel buffers. */
export const UDP_RCVBUF_BYTES = 4 * 1024 * 1024;
export const UDP_SNDBUF_BYTES = 4 * 1024 * 1024;

/** CONTROL_MESSAGE_MAX_BYTES bounds one control-connection frame; larger ones close the connection. */
export const CONTROL_MESSAGE_MAX_BYTES = 8 * 1024 * 1024;
/** PROTOCOL_VERSION_MIN/MAX is the control protocol version range we speak. */
export const PROTOCOL_VERSION_MIN = 1;
export const PROTOCOL_VERSION_MAX = 1;
/** HANDSHAKE_TIMEOUT_MS is how long a new control connection may take to complete its handshake. */
export const HANDSHAKE_TIMEOUT_MS = 5_000;
/**
 * HEARTBEAT_INTERVAL_MS: a control connection that has sent nothing this long sends a heartbeat
 * (checked every half interval): at most 1.5 intervals (3 s) of silence on a live connection,
 * against the 5 s timeout. TCP does not lose them, so more would only cost every idle router CPU.
 */
export const HEARTBEAT_INTERVAL_MS = 2_000;
/** HEARTBEAT_TIMEOUT_MS closes a control connection that has been silent this long. */
export const HEARTBEAT_TIMEOUT_MS = 5_000;
/**
 * HEARTBEAT_RELAXED_INTERVAL_MS: while the data path proves the peer's router alive both ways (its
 * data-path heartbeats reach us and ours are acked, see Connection's `dataLiveness`), a control
 * connection sends a heartbeat only this often, and closes only after HEARTBEAT_RELAXED_TIMEOUT_MS
 * of silence: the control heartbeats were a quarter of an idle router's CPU, doing twice the work
 * the data-path heartbeats already do. Writing now and then still makes the kernel notice a dead
 * TCP connection, and the silence bound closes one the peer can no longer write to.
 */
export const HEARTBEAT_RELAXED_INTERVAL_MS = 15_000;
/** HEARTBEAT_RELAXED_TIMEOUT_MS closes a control connection silent this long even while its data path lives. */
export const HEARTBEAT_RELAXED_TIMEOUT_MS = 45_000;
/** DATA_HEARTBEAT_INTERVAL_MS is how often each router sends a data-path heartbeat to each peer. */
export const DATA_HEARTBEAT_INTERVAL_MS = 500;
/** PMTU_PROBE_TIMEOUT_MS: a path MTU probe not acked this long is lost. */
export const PMTU_PROBE_TIMEOUT_MS = 1_000;
/** PMTU_PROBE_TRIES: a size is too big for the path only after this many lost probes (loss is not a small path). */
export const PMTU_PROBE_TRIES = 3;
/** PMTU_REPROBE_MS: how long a path MTU below the device's holds before Weft probes upward (the kernel also forgets ICMP-learned ones after 10 min). */
export const PMTU_REPROBE_MS = 600_000;
/** ICMP_FRAG_NEEDED_PER_S bounds the "fragmentation needed" messages the datapath writes back per second. */
export const ICMP_FRAG_NEEDED_PER_S = 1_000;
/** PEER_DOWN_TIMEOUT_MS: a data path silent this long in either direction is failed and avoided. */
export const PEER_DOWN_TIMEOUT_MS = 5_000;
/**
 * DISCOVERY_DEGREE: discovery connects to every peer it learns of until the router has this many
 * connections (a full mesh for clusters up to DISCOVERY_DEGREE + 1 hosts); beyond, peers are
 * reached through relays so that topology gossip stays O(N) per peer.
 */
export const DISCOVERY_DEGREE = 16;
/** RECONNECT_INITIAL_MS, RECONNECT_FACTOR, RECONNECT_MAX_MS: backoff for dialling targets (with jitter). */
export const RECONNECT_INITIAL_MS = 2_000;
export const RECONNECT_FACTOR = 1.5;
export const RECONNECT_MAX_MS = 180_000;

// ---- Mesh (control connections, gossip, routes) ----

/** GOSSIP_INTERVAL_MS is how often the owner calls `tick()`: one full-state exchange per channel (mesh: 30 s). */
export const GOSSIP_INTERVAL_MS = 30_000;
/** GOSSIP_RELAY_TTL is the hop budget of a gossip unicast; a relay that would make it 0 drops it. */
export const GOSSIP_RELAY_TTL = 16;
/**
 * PEER_GC_DELAY_MS is how long after a topology change the owner waits before forgetting
 * unreachable peers, so that an entry that arrives just before the connections that reach it is
 * not dropped in between (mesh waits 1 s too).
 */
export const PEER_GC_DELAY_MS = 1_000;
/**
 * FORGOTTEN_KEEP_MS is how long a forgotten peer's entry is kept (router/topology.ts): long
 * enough for every neighbour to forget it too, so that its copy gossiped back is not news, and
 * to restore it if it becomes reachable again unchanged.
 */
export const FORGOTTEN_KEEP_MS = 600_000;
/**
 * TOPOLOGY_ANNOUNCE_DELAY_MS coalesces gossip of our own entry: a connection's pending and
 * established states, and a new router's first connections, go out as one delta instead of one
 * epidemic each (mesh batches its topology broadcasts too). A join in a mesh of N routers then
 * costs about degree + 1 epidemics, not 4 × degree.
 */
export const TOPOLOGY_ANNOUNCE_DELAY_MS = 50;
/** SEND_BUFFER_MAX_BYTES: `send()` drops (and counts) a message while more than this is queued on the socket. */
export const SEND_BUFFER_MAX_BYTES = 16 * 1024 * 1024;
/** CLOSE_LINGER_MS is how long a closed connection waits for the peer's FIN before destroying the socket. */
export const CLOSE_LINGER_MS = 2_000;
/** TCP_KEEPALIVE_DELAY_MS is the kernel keepalive idle time; heartbeats do the real liveness check. */
export const TCP_KEEPALIVE_DELAY_MS = 30_000;
/** CONN_LIMIT_DEFAULT is the default cap on live control connections; more inbound ones are refused. */
export const CONN_LIMIT_DEFAULT = 200;
/** RECONNECT_JITTER is the ± fraction applied to every backoff delay so restarts do not dial in lock-step. */
export const RECONNECT_JITTER = 0.1;
