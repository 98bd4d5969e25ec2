/**
 * Data-plane UDP sockets: the PacketConn contract, the native batched socket (NativeUdp), the
 * portable one on Node's dgram (DgramUdp) and the in-process network for multi-router tests
 * (MemoryUdpNet/MemoryUdp). The conformance suite (packet-conn.suite.ts) is test-only and not
 * exported here.
 */
export { DgramUdp, type DgramUdpOptions, udpOpenError } from './dgram-udp.js';
export {
  type DatagramFilter,
  MemoryUdp,
  MemoryUdpNet,
  type MemoryUdpNetStats,
  type MemoryUdpOptions,
} from './memory-udp.js';
export { NativeUdp, type NativeUdpOptions } from './native-udp.js';
export type { PacketConn } from './packet-conn.js';
