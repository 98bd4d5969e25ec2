import { pino } from 'pino';

/**
 * Field names used in structured log records. Messages are short event phrases
 * ("connection established"); identifiers go in these fields, never in the message.
 */
export type LogFields = {
  peer?: string; // peer name (MAC form)
  nickname?: string;
  remoteAddr?: string; // ip:port of the other end of a connection
  overlay?: string; // 'sleeve' | 'vxlan'
  encap?: string;
  device?: string; // TUN/TAP device name
  cidr?: string;
  addr?: string; // an IPv4 address or ip:port we listen on
  reason?: string; // why something was dropped, refused or closed
  err?: string; // an error message
  code?: string; // a WeftError code
  count?: number;
  ms?: number; // a duration in milliseconds
  [key: string]: unknown;
};

/** Logger is the structured logger every component takes through its options. */
export interface Logger {
  readonly isDebug: boolean;
  debug(msg: string, fields?: LogFields): void;
  info(msg: string, fields?: LogFields): void;
  warn(msg: string, fields?: LogFields): void;
  error(msg: string, fields?: LogFields): void;
  child(fields: LogFields): Logger;
}

/** noopLogger discards everything; the default for tests and library use. */
export const noopLogger: Logger = {
  isDebug: false,
  debug() {},
  info() {},
  warn() {},
  error() {},
  child() {
    return noopLogger;
  },
};

export type LogLevel = 'debug' | 'info' | 'warn' | 'error';

/** createLogger returns a JSON-lines logger (pino) writing to stdout at the given level. */
export function createLogger(level: LogLevel = 'info'): Logger {
  return wrap(pino({ level, base: undefined, timestamp: pino.stdTimeFunctions.isoTime }));
}

function wrap(p: pino.Logger): Logger {
  return {
    get isDebug() {
      return p.isLevelEnabled('debug');
    },
    debug: (msg, fields) => p.debug(fields ?? {}, msg),
    info: (msg, fields) => p.info(fields ?? {}, msg),
    warn: (msg, fields) => p.warn(fields ?? {}, msg),
    error: (msg, fields) => p.error(fields ?? {}, msg),
    child: (fields) => wrap(p.child(fields)),
  };
}
