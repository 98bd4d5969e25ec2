import { describe, expect, it } from 'vitest';
import { InputError } from './errors.js';
import {
  formatIPv4,
  isIPv4,
  type PeerName,
  parseIPv4,
  parseOwnPeerName,
  parsePeerName,
  peerNameFromBytes,
  peerNameToBytes,
  randomPeerName,
  reservedPeerNameReason,
} from './types.js';

describe('parseOwnPeerName', () => {
  it('takes unicast names, normalised to lower case', () => {
    expect(parseOwnPeerName('02:42:0A:00:00:01')).toBe('02:42:0a:00:00:01');
    expect(parseOwnPeerName('fe:ff:ff:ff:ff:ff')).toBe('fe:ff:ff:ff:ff:ff');
    expect(parseOwnPeerName('00:00:00:00:00:01')).toBe('00:00:00:00:00:01');
  });

  it.each([
    ['ff:ff:ff:ff:ff:ff', /broadcast/],
    ['FF:FF:FF:FF:FF:FF', /broadcast/],
    ['00:00:00:00:00:00', /all-zero/],
    ['01:00:5e:00:00:01', /multicast/],
    ['33:33:00:00:00:01', /multicast/],
    ['03:00:00:00:00:00', /multicast/],
  ])('refuses %s, which cannot be a MAC address of one router', (text, why) => {
    expect(() => parseOwnPeerName(text)).toThrow(InputError);
    expect(() => parseOwnPeerName(text)).toThrow(why);
    expect(() => parseOwnPeerName(text)).toThrow(/unicast/);
  });

  it('still refuses what is not a peer name at all', () => {
    expect(() => parseOwnPeerName('not-a-mac')).toThrow(/invalid peer name/);
  });

  it('leaves parsePeerName as it was: names of other peers are only checked for form', () => {
    expect(parsePeerName('ff:ff:ff:ff:ff:ff')).toBe('ff:ff:ff:ff:ff:ff');
  });
});

describe('reservedPeerNameReason', () => {
  it('never objects to a random name', () => {
    for (let i = 0; i < 256; i++) {
      const n = randomPeerName(() => Uint8Array.from([i, 0xff, 0xff, 0xff, 0xff, 0xff]));
      expect(reservedPeerNameReason(n), n).toBeUndefined();
    }
  });

  it('objects to every name with the I/G bit set', () => {
    for (let b = 1; b < 256; b += 2) {
      const n = `${b.toString(16).padStart(2, '0')}:00:00:00:00:01` as PeerName;
      expect(reservedPeerNameReason(n), n).toBeDefined();
    }
  });
});

describe('IPv4 text: the one parser', () => {
  it('takes dotted quads and round-trips them', () => {
    for (const s of ['0.0.0.0', '10.32.0.1', '127.0.0.1', '255.255.255.255']) {
      expect(isIPv4(s)).toBe(true);
      expect(formatIPv4(parseIPv4(s))).toBe(s);
    }
    expect(parseIPv4('10.32.0.1')).toBe(0x0a200001);
  });

  it.each([
    '',
    '1.2.3',
    '1.2.3.4.5',
    '256.0.0.1',
    '010.0.0.1',
    '0x1.2.3.4',
    '1.2.3.4 ',
    ' 1.2.3.4',
    '1..2.3',
    '::1',
    '1.2.3.-4',
  ])('refuses %j', (s) => {
    expect(isIPv4(s)).toBe(false);
    expect(() => parseIPv4(s)).toThrow(InputError);
  });
});

describe('peer names as bytes', () => {
  it('reads any 6 bytes back as the name they were written from, past its cache of names too', () => {
    const buf = new Uint8Array(8);
    for (let i = 0; i < 70_000; i++) {
      const name = Array.from({ length: 6 }, (_, k) => ((i * (k + 7) * 2654435761) >>> (k * 4)) & 255)
        .map((b) => b.toString(16).padStart(2, '0'))
        .join(':') as PeerName;
      peerNameToBytes(name, buf, 1);
      const back = peerNameFromBytes(buf, 1);
      if (back !== name) expect(back).toBe(name);
      expect(peerNameFromBytes(buf, 1)).toBe(back);
    }
    // Bytes past the end read as 0.
    expect(peerNameFromBytes(new Uint8Array([0xab, 0xcd]), 0)).toBe('ab:cd:00:00:00:00');
    expect(peerNameFromBytes(new Uint8Array([0xff, 0xff, 0xff, 0xff, 0xff, 0xff]), 0)).toBe('ff:ff:ff:ff:ff:ff');
  });
});
