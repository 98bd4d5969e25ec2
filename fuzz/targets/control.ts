/**
 * Control-connection frames (router/protocol.ts): a TCP byte stream cut into random chunks, fed
 * to a FrameDecoder as a connection does (Hello limit first, the full limit after), and every frame
 * body run through each decoder a connection may apply (Hello, Auth, post-handshake messages).
 *
 * Input: | chunking seed (1) | stream ... |
 *
 * Properties: only ProtocolError escapes; the decoder never holds more than one frame's limit plus
 * the chunk being pushed; a frame it returns is exactly as long as its header said; a message that
 * decodes re-encodes (encodeFrame) and decodes to the same tag.
 */
import * as fc from 'fast-check';
import { ProtocolError } from '../../common/errors.js';
import { mulberry32 } from '../../common/random.js';
import { HELLO_MAX_BYTES } from '../../router/conn-limits.js';
import {
  decodeBody,
  decodeMessage,
  encodeFrame,
  FRAME_HEADER_LEN,
  FrameDecoder,
  type Hello,
  parseAuth,
  parseClose,
  parseHello,
} from '../../router/protocol.js';
import { concat } from '../mutator.js';
import { cidrText, oddValue, Pool, pack } from '../structured.js';
import { check, type FuzzTarget, label } from '../target.js';
import { encodeTopologySeeds } from './gossip.js';

const OURS = { min: 1, max: 2 };
/** CONTROL_MAX_FUZZ: the post-handshake limit used here; the real one (8 MiB) is tested by the unit tests. */
const CONTROL_MAX_FUZZ = 64 * 1024;

const hello: Hello = {
  proto: 'weft',
  versionMin: 1,
  versionMax: 2,
  name: '02:00:00:00:00:0b',
  nickname: 'b',
  uid: '1002',
  tcpPort: 6783,
  sleevePort: 6783,
  vxlanPort: 6784,
  vni: 42,
  encap: 'sleeve',
  mtu: 1400,
  nonce: new Uint8Array(16).fill(7),
  auth: true,
  // With auth, a Hello carries the ephemeral X25519 key and the cipher list (router/crypto).
  kx: new Uint8Array(32).fill(9),
  ciphers: ['aes-256-gcm', 'chacha20-poly1305'],
};

function seeds(): Uint8Array[] {
  const frames: Uint8Array[] = [
    encodeFrame(hello),
    encodeFrame({ ...hello, auth: false, kx: undefined, ciphers: undefined, encap: 'vxlan', nickname: '' }),
    encodeFrame({ t: 'auth', mac: new Uint8Array(32).fill(1) }),
    encodeFrame({ t: 'hb' }),
    encodeFrame({ t: 'addrs', cidrs: ['10.32.0.0/12', '10.40.0.1/32'] }),
    encodeFrame({ t: 'gossip', channel: 'topology', payload: encodeTopologySeeds()[0] as Uint8Array }),
    encodeFrame({ t: 'close', reason: 'router shutting down' }),
  ];
  const unknown = pack({ t: 'future', x: 1 }) as Uint8Array;
  const u = new Uint8Array(FRAME_HEADER_LEN + unknown.length);
  new DataView(u.buffer).setUint32(0, unknown.length);
  u.set(unknown, FRAME_HEADER_LEN);
  frames.push(u);
  const out = frames.map((f) => concat(Uint8Array.of(0), f));
  // A whole conversation in one stream, cut at several places.
  for (const cut of [1, 3, 17, 200]) out.push(concat(Uint8Array.of(cut), ...frames));
  return out;
}

/** framed puts one body behind its 4-byte length. */
function framed(body: Uint8Array): Uint8Array {
  const f = new Uint8Array(1 + FRAME_HEADER_LEN + body.length);
  new DataView(f.buffer).setUint32(1, body.length);
  f.set(body, 1 + FRAME_HEADER_LEN);
  return f;
}

const messages = fc.oneof(
  fc.record({
    proto: fc.constantFrom('weft', 'weave', ''),
    versionMin: fc.oneof(fc.constantFrom(0, 1, 2, 3, 65535, 65536), oddValue),
    versionMax: fc.oneof(fc.constantFrom(0, 1, 2, 3, 65535), oddValue),
    name: fc.oneof(fc.constantFrom('02:00:00:00:00:0b', '02:00:00:00:00:0B', ''), fc.string()),
    nickname: fc.string({ maxLength: 70 }),
    uid: fc.oneof(fc.constantFrom('1', '0', '18446744073709551615', '18446744073709551616', '01'), fc.string()),
    tcpPort: fc.oneof(fc.constantFrom(0, 1, 65535, 65536), oddValue),
    sleevePort: fc.integer({ min: -1, max: 70000 }),
    vxlanPort: fc.integer({ min: -1, max: 70000 }),
    vni: fc.oneof(fc.constantFrom(0, 16777215, 16777216), fc.integer()),
    encap: fc.constantFrom('sleeve', 'vxlan', 'fastdp'),
    mtu: fc.integer({ min: 0, max: 70000 }),
    nonce: fc.uint8Array({ minLength: 15, maxLength: 17 }),
    auth: fc.oneof(fc.boolean(), oddValue),
    kx: fc.oneof(fc.uint8Array({ minLength: 31, maxLength: 33 }), oddValue),
    ciphers: fc.oneof(fc.array(fc.constantFrom('aes-256-gcm', 'chacha20-poly1305', '', 'x'.repeat(33))), oddValue),
  }),
  fc.record({ t: fc.constantFrom('auth'), mac: fc.uint8Array({ minLength: 31, maxLength: 33 }) }),
  fc.record({ t: fc.constantFrom('hb', 'close', 'x'.repeat(65), ''), reason: fc.oneof(fc.string(), oddValue) }),
  fc.record({ t: fc.constant('addrs'), cidrs: fc.array(fc.oneof(cidrText, oddValue), { maxLength: 6 }) }),
  fc.record({
    t: fc.constant('gossip'),
    channel: fc.oneof(fc.constantFrom('topology', 'ipam', 'dns', '', 'c'.repeat(65)), oddValue),
    payload: fc.oneof(fc.uint8Array({ maxLength: 64 }), oddValue),
  }),
  fc.dictionary(fc.constantFrom('t', '__proto__', 'constructor', 'proto', 'payload'), oddValue),
  oddValue,
);

const pool = new Pool(
  messages,
  (v) => {
    const b = pack(v);
    return b === undefined ? undefined : framed(b);
  },
  11,
);

/** controlFrames fuzzes the control-connection framing and message decoders. */
export const controlFrames: FuzzTarget = {
  name: 'control-frames',
  parsers: [
    'router/protocol.ts: FrameDecoder.push/next',
    'router/protocol.ts: decodeBody, decodeMessage, parseMessage, parseHello, parseAuth, parseClose (zod schemas)',
  ],
  maxLen: 8192,
  seeds,
  generate: (rand) => pool.next(rand),
  run(input: Uint8Array): string {
    if (input.length === 0) return 'empty';
    const rand = mulberry32(input[0] as number);
    const dec = new FrameDecoder(HELLO_MAX_BYTES);
    let outcome = 'need-more';
    let frames = 0;
    let largestChunk = 0;
    try {
      for (let off = 1; off < input.length; ) {
        const n = Math.min(input.length - off, 1 + Math.floor(rand() * (rand() < 0.5 ? 8 : 600)));
        // A socket chunk is its own buffer: copy, as the kernel hands over fresh memory.
        dec.push(input.slice(off, off + n));
        off += n;
        largestChunk = Math.max(largestChunk, n);
        for (;;) {
          const body = dec.next();
          if (body === undefined) break;
          check(body.length >= 1 && body.length <= dec.maxBytes, `frame of ${body.length} bytes returned`);
          outcome = decodeAll(body, frames++);
          dec.maxBytes = CONTROL_MAX_FUZZ;
        }
        check(
          dec.bufferedBytes <= dec.maxBytes + FRAME_HEADER_LEN + largestChunk,
          `decoder holds ${dec.bufferedBytes} bytes`,
        );
      }
    } catch (err) {
      if (!(err instanceof ProtocolError)) throw err;
      return label('stream', err.message);
    }
    return outcome;
  },
};

/** decodeAll runs every decoder a connection may apply to one body; returns the label of the last that answered. */
function decodeAll(body: Uint8Array, index: number): string {
  let out = 'ok';
  for (const step of [0, 1, 2, 3]) {
    try {
      if (step === 0) {
        const d = decodeMessage(body);
        if (d.known) {
          // What decodes must re-encode, and decode to the same message type.
          const again = decodeMessage(encodeFrame(d.msg).subarray(FRAME_HEADER_LEN));
          check(again.known && again.msg.t === d.msg.t, `re-encoded ${d.msg.t} decodes differently`);
          out = `msg:${d.msg.t}`;
        } else out = 'msg:unknown';
      } else if (step === 1) {
        const h = parseHello(decodeBody(body), OURS);
        check(h.version >= OURS.min && h.version <= OURS.max, `negotiated version ${h.version}`);
        out = 'hello';
      } else if (step === 2) {
        parseAuth(decodeBody(body));
        out = 'auth';
      } else {
        parseClose(decodeBody(body));
        out = 'close';
      }
    } catch (err) {
      if (!(err instanceof ProtocolError)) throw err;
      if (index === 0 && step === 0) out = label('err', err.message);
    }
  }
  return out;
}
