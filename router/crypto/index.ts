/**
 * router/crypto: the building blocks of `--password` encryption (issue #13), for the control
 * connection (keys.ts, sealed-framer.ts) and the sleeve datapath (data-crypto.ts, replay.ts).
 * The batched AEAD itself is in the native addon (router/tun/native.ts aead*).
 */
export {
  AEAD_CIPHERS,
  AEAD_IV_BYTES,
  AEAD_KEY_BYTES,
  AEAD_TAG_BYTES,
  type AeadCipher,
  DEFAULT_AEAD_CIPHER,
  isAeadCipher,
  negotiateCipher,
  nonceFor,
} from './aead.js';
export {
  DATA_AAD_BYTES,
  DATA_COUNTER_OFFSET,
  DATA_SEAL_OVERHEAD_BYTES,
  DATA_SEALED_MIN_BYTES,
  DATA_TTL_OFFSET,
  type DataCryptoOptions,
  DataReceiver,
  DataSender,
  KEY_PHASES,
  REKEY_AFTER_BYTES,
  REKEY_AFTER_MESSAGES,
  REKEY_AFTER_TIME_MS,
} from './data-crypto.js';
export {
  CONFIRM_BYTES,
  type DataGeneration,
  type DirectionKey,
  dataGeneration,
  derivePasswordKey,
  KeyExchange,
  KeyExchangeError,
  type KeyExchangeOptions,
  type KeyExchangeReason,
  KX_NONCE_BYTES,
  type KxRole,
  type RemoteKxInfo,
  SessionKeys,
  TRAFFIC_SECRET_BYTES,
  transcriptHash,
  X25519_KEY_BYTES,
} from './keys.js';
export { REJECT_AFTER_MESSAGES, REPLAY_WINDOW_PACKETS, ReplayVerdict, ReplayWindow } from './replay.js';
export {
  FrameOpener,
  FrameSealer,
  SEALED_FRAME_OVERHEAD_BYTES,
  SEALED_FRAMES_MAX,
  SealedFrameError,
  type SealedFrameReason,
} from './sealed-framer.js';
