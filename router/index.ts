/** The router's public surface: the only module dns/, control/, bench/ and e2e/ import from router/. */

export { NativeUdp } from './conn/native-udp.js';
export type { PacketConn } from './conn/packet-conn.js';
export * from './constants.js';
export { Counters, type CountersSnapshot, DROP_NAMES, Drop } from './datapath/counters.js';
export type { Gossip, Gossiper } from './gossip/gossip.js';
export {
  formatIpamInit,
  type IpamInit,
  type IpamStatus,
  parseIpamInit,
} from './ipam/service.js';
export { FASTDP_DEVICE } from './kernel/fastdp.js';
export { EXPOSE_OWNER, Router, type RouterOptions } from './router.js';
export type { LearnedStatus, PeerStatus, RouterStatus } from './status.js';
export type { TunDevice } from './tun/device.js';
export { underlayMtu } from './underlay.js';
