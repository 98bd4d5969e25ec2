import { fold16, sum16, VNET_F_NEEDS_CSUM, VNET_GSO_TCPV4, VNET_HDR_LEN } from '../datapath/gso.js';

/**
 * withVnetHeader returns `pkt` behind a virtio-net header, as a TUN device with IFF_VNET_HDR hands
 * it over: with `mss` > 0 the packet is a TCP super-packet (20-byte IPv4 and TCP headers) to be cut
 * into `mss`-byte segments, with its TCP checksum set to the pseudo-header sum (partial); else a
 * header saying "one complete packet". For tests, benches and fuzzers.
 */
export function withVnetHeader(pkt: Buffer, mss = 0): Buffer {
  const h = Buffer.alloc(VNET_HDR_LEN);
  if (mss > 0) {
    h[0] = VNET_F_NEEDS_CSUM;
    h[1] = VNET_GSO_TCPV4;
    h.writeUInt16LE(40, 2);
    h.writeUInt16LE(mss, 4);
    h.writeUInt16LE(20, 6);
    h.writeUInt16LE(16, 8);
    pkt.writeUInt16BE(fold16(sum16(pkt, 12, 20, 6 + pkt.length - 20)), 36);
  }
  return Buffer.concat([h, pkt]);
}
