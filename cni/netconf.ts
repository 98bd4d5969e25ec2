/**
 * Parsing of one CNI invocation: the CNI_* environment (spec 1.1 section 2, "Parameters") and the
 * plugin configuration on stdin (section 1 and section 3 "Deriving request configuration"). Pure
 * functions: nothing here reads the process's environment or stdin, so tests feed them directly.
 */
import { CniCode, CniError } from './errors.js';

/** SUPPORTED_VERSIONS are the CNI spec versions this plugin speaks (VERSION answers with them). */
export const SUPPORTED_VERSIONS = ['0.3.0', '0.3.1', '0.4.0', '1.0.0', '1.1.0'] as const;
/** LATEST_VERSION is used where the runtime names no version (VERSION with no config). */
export const LATEST_VERSION = '1.1.0';

/** CniCommand is one of the spec's operations. */
export type CniCommand = 'ADD' | 'DEL' | 'CHECK' | 'VERSION' | 'STATUS' | 'GC';
const COMMANDS: readonly string[] = ['ADD', 'DEL', 'CHECK', 'VERSION', 'STATUS', 'GC'];

/** Invocation is the CNI_* environment of one run, validated for its command. */
export interface Invocation {
  command: CniCommand;
  /** containerId is CNI_CONTAINERID (ADD, DEL, CHECK). */
  containerId: string;
  /** netns is CNI_NETNS: required for ADD and CHECK, may be empty for DEL ('' then). */
  netns: string;
  /** ifname is CNI_IFNAME (ADD, DEL, CHECK). */
  ifname: string;
  /** args are CNI_ARGS' KEY=VALUE pairs (e.g. K8S_POD_NAME). */
  args: ReadonlyMap<string, string>;
}

/** CONTAINER_ID is the spec's rule for CNI_CONTAINERID. */
const CONTAINER_ID = /^[A-Za-z0-9][A-Za-z0-9_.-]*$/;
/** IFNAME is the spec's rule for CNI_IFNAME (Linux's): 1-15 bytes, not `.`/`..`, no `/`, `:` or whitespace. */
const IFNAME = /^(?!\.{1,2}$)[^\s/:]{1,15}$/;
/** NETWORK_NAME is the spec's rule for a network's name. */
const NETWORK_NAME = /^[A-Za-z0-9][A-Za-z0-9_.-]*$/;

/** parseInvocation reads the CNI_* variables of `env`; a missing or malformed one is error 4 naming it. */
export function parseInvocation(env: Readonly<Record<string, string | undefined>>): Invocation {
  const command = env.CNI_COMMAND ?? '';
  if (!COMMANDS.includes(command)) {
    throw new CniError(
      CniCode.InvalidEnvironment,
      `invalid CNI_COMMAND "${command}": want one of ${COMMANDS.join(', ')}`,
    );
  }
  const attachment = command === 'ADD' || command === 'DEL' || command === 'CHECK';
  const containerId = env.CNI_CONTAINERID ?? '';
  const netns = env.CNI_NETNS ?? '';
  const ifname = env.CNI_IFNAME ?? '';
  if (attachment) {
    if (!CONTAINER_ID.test(containerId)) {
      throw new CniError(CniCode.InvalidEnvironment, `invalid CNI_CONTAINERID "${containerId}"`);
    }
    if (!IFNAME.test(ifname)) throw new CniError(CniCode.InvalidEnvironment, `invalid CNI_IFNAME "${ifname}"`);
    if (command !== 'DEL' && !netns.startsWith('/')) {
      throw new CniError(CniCode.InvalidEnvironment, `invalid CNI_NETNS "${netns}": want the namespace's path`);
    }
  }
  return { command: command as CniCommand, containerId, netns, ifname, args: parseArgs(env.CNI_ARGS ?? '') };
}

/** parseArgs splits CNI_ARGS ("K=V;K2=V2"); pairs without `=` are ignored. */
export function parseArgs(text: string): Map<string, string> {
  const out = new Map<string, string>();
  for (const pair of text.split(';')) {
    const i = pair.indexOf('=');
    if (i > 0) out.set(pair.slice(0, i), pair.slice(i + 1));
  }
  return out;
}

/** ValidAttachment is one entry of GC's `cni.dev/valid-attachments`. */
export interface ValidAttachment {
  containerID: string;
  ifname: string;
}

/** NetConf is the part of the plugin configuration the plugin acts on. */
export interface NetConf {
  cniVersion: string;
  /** name is the network's name: part of every owner key, so GC touches only this network's attachments. */
  name: string;
  type: string;
  /** socket is the router's API socket; undefined: the router of this network namespace (as the CLI finds it). */
  socket: string | undefined;
  /** defaultRoute: the pod gets a default route via its host's overlay address (default true). */
  defaultRoute: boolean;
  /** dnsNames: register the pod's K8S_POD_NAME (a DNS label) in Weft's DNS (default true). */
  dnsNames: boolean;
  /** prevResult is the result of the previous plugin (ADD in a chain) or of the whole ADD (DEL, CHECK). */
  prevResult: Record<string, unknown> | undefined;
  /** validAttachments is GC's list of attachments still in use. */
  validAttachments: ValidAttachment[];
}

/** versionTuple parses "X.Y.Z"; undefined when it is not one. */
export function versionTuple(v: string): [number, number, number] | undefined {
  const m = /^(\d{1,4})\.(\d{1,4})\.(\d{1,4})$/.exec(v);
  return m === null ? undefined : [Number(m[1]), Number(m[2]), Number(m[3])];
}

/** versionAtLeast compares two "X.Y.Z" versions (a malformed one is never at least anything). */
export function versionAtLeast(v: string, min: string): boolean {
  const a = versionTuple(v);
  const b = versionTuple(min);
  if (a === undefined || b === undefined) return false;
  for (let i = 0; i < 3; i++) if (a[i] !== b[i]) return (a[i] as number) > (b[i] as number);
  return true;
}

/** MIN_VERSION is the first spec version that has each command. */
const MIN_VERSION: Record<CniCommand, string> = {
  ADD: '0.3.0',
  DEL: '0.3.0',
  VERSION: '0.3.0',
  CHECK: '0.4.0',
  GC: '1.1.0',
  STATUS: '1.1.0',
};

/** UNSUPPORTED_KEYS are well-known keys this plugin refuses (error 2): Weft allocates from its own IPAM. */
const UNSUPPORTED_KEYS = ['ipam'];

/**
 * parseNetConf decodes and validates the configuration on stdin for `command`: 6 when it is not
 * JSON, 1 for a version we do not speak (or one too old for the command), 2 for a field we refuse,
 * 7 for anything else invalid.
 */
export function parseNetConf(text: string, command: CniCommand): NetConf {
  let json: unknown;
  try {
    json = JSON.parse(text);
  } catch (err) {
    throw new CniError(CniCode.Decode, 'network configuration on stdin is not JSON', (err as Error).message);
  }
  if (json === null || typeof json !== 'object' || Array.isArray(json)) {
    throw new CniError(CniCode.Decode, 'network configuration on stdin is not a JSON object');
  }
  const c = json as Record<string, unknown>;
  const cniVersion = c.cniVersion;
  if (typeof cniVersion !== 'string') throw new CniError(CniCode.InvalidConfig, 'missing "cniVersion"');
  if (!(SUPPORTED_VERSIONS as readonly string[]).includes(cniVersion)) {
    throw new CniError(
      CniCode.IncompatibleVersion,
      `unsupported cniVersion "${cniVersion}": this plugin supports ${SUPPORTED_VERSIONS.join(', ')}`,
    );
  }
  if (!versionAtLeast(cniVersion, MIN_VERSION[command])) {
    throw new CniError(
      CniCode.IncompatibleVersion,
      `${command} needs cniVersion ${MIN_VERSION[command]} or later, not "${cniVersion}"`,
    );
  }
  if (command === 'VERSION') {
    return {
      cniVersion,
      name: '',
      type: '',
      socket: undefined,
      defaultRoute: true,
      dnsNames: true,
      prevResult: undefined,
      validAttachments: [],
    };
  }
  const name = c.name;
  if (typeof name !== 'string' || !NETWORK_NAME.test(name) || name.length > 64) {
    throw new CniError(
      CniCode.InvalidConfig,
      `invalid network "name" ${JSON.stringify(name)}: want 1-64 of A-Z a-z 0-9 _ . -`,
    );
  }
  const type = c.type;
  if (typeof type !== 'string' || type === '' || /[/\\]/.test(type)) {
    throw new CniError(CniCode.InvalidConfig, `invalid "type" ${JSON.stringify(type)}`);
  }
  for (const k of UNSUPPORTED_KEYS) {
    if (c[k] !== undefined) {
      throw new CniError(
        CniCode.UnsupportedField,
        `unsupported field "${k}": ${JSON.stringify(c[k])}: weft gives addresses from its own IPAM`,
      );
    }
  }
  const socket = c.socket;
  if (socket !== undefined && (typeof socket !== 'string' || !socket.startsWith('/') || socket.length > 107)) {
    throw new CniError(
      CniCode.InvalidConfig,
      `invalid "socket" ${JSON.stringify(socket)}: want an absolute path of at most 107 bytes`,
    );
  }
  const defaultRoute = optionalBool(c, 'defaultRoute', true);
  const dnsNames = optionalBool(c, 'dnsNames', true);
  const prev = c.prevResult;
  if (prev !== undefined && (prev === null || typeof prev !== 'object' || Array.isArray(prev))) {
    throw new CniError(CniCode.InvalidConfig, '"prevResult" must be a result object');
  }
  return {
    cniVersion,
    name,
    type,
    socket: socket as string | undefined,
    defaultRoute,
    dnsNames,
    prevResult: prev as Record<string, unknown> | undefined,
    validAttachments: command === 'GC' ? validAttachments(c) : [],
  };
}

function optionalBool(c: Record<string, unknown>, key: string, dflt: boolean): boolean {
  const v = c[key];
  if (v === undefined) return dflt;
  if (typeof v !== 'boolean')
    throw new CniError(CniCode.InvalidConfig, `"${key}" must be true or false, not ${JSON.stringify(v)}`);
  return v;
}

/**
 * validAttachments reads GC's list. libcni 1.2 sends it as both `cni.dev/valid-attachments` and
 * `cni.dev/attachments` (the spec's earlier name); either is taken.
 */
function validAttachments(c: Record<string, unknown>): ValidAttachment[] {
  const raw = c['cni.dev/valid-attachments'] ?? c['cni.dev/attachments'];
  // Absent is not "none is valid": a malformed request must not unplug every pod.
  if (!Array.isArray(raw)) throw new CniError(CniCode.InvalidConfig, 'GC needs "cni.dev/valid-attachments" (a list)');
  return raw.map((a, i) => {
    const o = a as Record<string, unknown> | null;
    if (o === null || typeof o !== 'object' || typeof o.containerID !== 'string' || typeof o.ifname !== 'string') {
      throw new CniError(CniCode.InvalidConfig, `"cni.dev/valid-attachments"[${i}] must be {containerID, ifname}`);
    }
    return { containerID: o.containerID, ifname: o.ifname };
  });
}

/** ownerKey is the key the router holds an attachment's address under: `NETWORK:CONTAINERID:IFNAME`. */
export function ownerKey(network: string, containerId: string, ifname: string): string {
  return `${network}:${containerId}:${ifname}`;
}
