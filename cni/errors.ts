/**
 * CNI error codes (CNI spec 1.1, section 5 "Error"): 0-99 are the spec's well-known codes, 100+
 * are Weft's own. Every failure of the plugin leaves as one {@link CniError} printed on stdout.
 */
export const CniCode = {
  /** IncompatibleVersion: the configuration's cniVersion is not one we support. */
  IncompatibleVersion: 1,
  /** UnsupportedField: a field we do not accept; the message names the key and value. */
  UnsupportedField: 2,
  /** UnknownContainer: the container (its network namespace) does not exist: nothing to clean up. */
  UnknownContainer: 3,
  /** InvalidEnvironment: a CNI_* variable is missing or malformed; the message names it. */
  InvalidEnvironment: 4,
  /** Io: stdin could not be read. */
  Io: 5,
  /** Decode: stdin is not JSON. */
  Decode: 6,
  /** InvalidConfig: the network configuration does not validate. */
  InvalidConfig: 7,
  /** TryAgainLater: a transient condition (the router is down, starting, or busy with this container). */
  TryAgainLater: 11,
  /** NotAvailable: STATUS: the plugin cannot serve ADD now. */
  NotAvailable: 50,
  /** RouterError: the router refused or failed the request; `details` carries its message. */
  RouterError: 100,
  /** NoAddress: the router has no address to give (no free space it can reach). */
  NoAddress: 101,
  /** CheckFailed: CHECK found the attachment missing or different from prevResult. */
  CheckFailed: 102,
} as const;

/** CniErrorCode is one of {@link CniCode}'s values. */
export type CniErrorCode = (typeof CniCode)[keyof typeof CniCode];

/** CniErrorJson is the spec's error result: `{cniVersion, code, msg, details}`. */
export interface CniErrorJson {
  cniVersion: string;
  code: number;
  msg: string;
  details?: string;
}

/**
 * CniError is a failure the plugin reports to the runtime: a stable `code`, a short `msg`
 * (lower-case, naming the offending value) and optional `details` (e.g. the router's own message).
 */
export class CniError extends Error {
  constructor(
    readonly code: CniErrorCode,
    message: string,
    readonly details?: string,
  ) {
    super(message);
    this.name = 'CniError';
  }

  /** toJson renders the error result for the given protocol version. */
  toJson(cniVersion: string): CniErrorJson {
    return { cniVersion, code: this.code, msg: this.message, ...(this.details ? { details: this.details } : {}) };
  }
}
