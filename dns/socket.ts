/**
 * The batched UDP socket (recvmmsg/sendmmsg in the native addon) the DNS server reads and
 * answers queries with: the only place dns/ touches the socket layer. When that layer moves to
 * a leaf module of its own, this re-export is the one line to change.
 */
export { NativeUdp, type PacketConn } from '../router/index.js';
