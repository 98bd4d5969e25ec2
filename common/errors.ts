/**
 * Error codes used across Weft. Each failure a caller may branch on has one stable code;
 * the CLI maps codes to exit statuses and the HTTP API maps them to status codes.
 */
export type WeftErrorCode =
  | 'EWEFT_CONFIG' // bad flag, bad environment, bad launch configuration
  | 'EWEFT_INPUT' // bad user input to a command or an HTTP endpoint
  | 'EWEFT_TUN_OPEN' // /dev/net/tun missing, no CAP_NET_ADMIN, addon not built
  | 'EWEFT_NATIVE' // the native addon failed in a way that is not a TUN open failure
  | 'EWEFT_PROTOCOL' // a control-connection peer sent something we cannot accept
  | 'EWEFT_PROTOCOL_VERSION' // no common protocol version with a peer
  | 'EWEFT_PEER_NAME_COLLISION' // a peer with our name but another UID
  | 'EWEFT_AUTH' // password mismatch with a peer
  | 'EWEFT_NOT_RUNNING' // the CLI found no router in this network namespace
  | 'EWEFT_NOT_READY' // the router is starting
  | 'EWEFT_INTERRUPTED' // the router went away after a change was sent: it may or may not have been made
  | 'EWEFT_CONFLICT' // the request conflicts with current state
  | 'EWEFT_NOT_FOUND' // the named thing does not exist
  | 'EWEFT_UNAVAILABLE' // nothing to give now (no free address, no seeded ring): retry later
  | 'EWEFT_SYSTEM'; // an external command or system call failed

/**
 * WeftError is the base of every error Weft throws on purpose. `code` is stable; messages are
 * lower-case and carry the offending value.
 */
export class WeftError extends Error {
  readonly code: WeftErrorCode;

  constructor(code: WeftErrorCode, message: string, options?: { cause?: unknown }) {
    super(message, options);
    this.name = 'WeftError';
    this.code = code;
  }
}

/** ConfigError reports a bad launch flag, environment variable or persisted setting. */
export class ConfigError extends WeftError {
  constructor(message: string, options?: { cause?: unknown }) {
    super('EWEFT_CONFIG', message, options);
    this.name = 'ConfigError';
  }
}

/** InputError reports bad user input to a CLI command or HTTP endpoint (HTTP 400). */
export class InputError extends WeftError {
  constructor(message: string, options?: { cause?: unknown }) {
    super('EWEFT_INPUT', message, options);
    this.name = 'InputError';
  }
}

/** TunOpenError says why a TUN/TAP device could not be opened (no device node, no permission, no addon). */
export class TunOpenError extends WeftError {
  constructor(message: string, options?: { cause?: unknown }) {
    super('EWEFT_TUN_OPEN', message, options);
    this.name = 'TunOpenError';
  }
}

/** ProtocolError reports a control-connection peer that broke the protocol; the connection is closed. */
export class ProtocolError extends WeftError {
  constructor(message: string, options?: { cause?: unknown; code?: WeftErrorCode }) {
    super(options?.code ?? 'EWEFT_PROTOCOL', message, options);
    this.name = 'ProtocolError';
  }
}

/** isWeftError narrows an unknown thrown value to a WeftError. */
export function isWeftError(err: unknown): err is WeftError {
  return err instanceof WeftError;
}

/** errorMessage renders any thrown value as one line. */
export function errorMessage(err: unknown): string {
  if (err instanceof Error) return err.message;
  return String(err);
}
