/**
 * Docker integration: `weft attach NAME|ID` of a Docker container, and the engine's events that
 * keep it attached.
 *
 * It talks to the engine's HTTP API over its unix socket with node:http (three endpoints: `/_ping`,
 * `/containers/ID/json` and the `/events` stream), not by spawning the docker CLI, and not with a
 * client library (dockerode would add docker-modem, tar-fs and ssh2 for these three requests).
 *
 * ```
 *   weft attach web ──► Attacher ──ContainerEngine.find("web")──► GET /containers/web/json
 *                          │          { key: full id, pid: State.Pid, name: "web" }
 *                          └─► veth into /proc/PID/ns/net (as for a pid target), record keyed by the id
 *
 *   GET /events (type=container, start|destroy) ──► start:   reattach (a restart made a new netns)
 *                                                   destroy: detach at once (address and names freed)
 * ```
 *
 * A container's record in the attacher is keyed by its full 64-hex id (stable across restarts,
 * never reused), so events and the journal agree. Everything here fails soft: without an engine
 * `find` answers undefined and status says "not found"; a malformed answer is an error for that
 * one request, never a crash.
 *
 * Over 400 lines because it is the one place that speaks to the Docker engine: the socket client,
 * the event stream's line splitter, the parsers of the engine's answers and the integration that
 * turns events into attach and detach share the engine's framing and the fail-soft rule above. Each
 * part is small, and outside this file and its tests only the integration (daemon.ts) and its
 * status type are used.
 */
import { request } from 'node:http';
import { z } from 'zod';
import { errorMessage, WeftError } from '../common/errors.js';
import type { Logger } from '../common/log.js';
import type { ContainerEngine, FoundContainer } from './attach.js';
import type { DockerPluginStatus } from './docker-plugin.js';

/** DOCKER_REQUEST_TIMEOUT_MS bounds one API request (not the events stream). */
export const DOCKER_REQUEST_TIMEOUT_MS = 5_000;
/** DOCKER_BODY_MAX_BYTES bounds one API answer; a larger one is refused as malformed (an inspect is ~10 KiB). */
export const DOCKER_BODY_MAX_BYTES = 1 << 20;
/** DOCKER_EVENT_MAX_BYTES bounds one line of the events stream; a longer line is dropped and counted. */
export const DOCKER_EVENT_MAX_BYTES = 64 << 10;
/** DOCKER_RETRY_MIN_MS / DOCKER_RETRY_MAX_MS: backoff between attempts to reach the engine and its events. */
export const DOCKER_RETRY_MIN_MS = 500;
export const DOCKER_RETRY_MAX_MS = 10_000;
/**
 * DOCKER_RETRY_ABSENT_FACTOR: while the engine's socket does not exist at all (ENOENT: no engine
 * on this host, the common idle case), the backoff grows this much further (30 s by default): each
 * attempt builds an HTTP request and its error, a noticeable part of an idle router's work. An
 * engine that exists but does not answer (ECONNREFUSED, restarting) keeps DOCKER_RETRY_MAX_MS;
 * whatever happened while not connected is caught up on connect (resync).
 */
export const DOCKER_RETRY_ABSENT_FACTOR = 3;

/** isContainerKey says whether an attach record's target is a Docker container (its full id). */
export function isContainerKey(target: string): boolean {
  return /^[0-9a-f]{64}$/.test(target);
}

/** DockerAnswer is one API answer: its status and its body (at most DOCKER_BODY_MAX_BYTES). */
export interface DockerAnswer {
  status: number;
  body: string;
}

/**
 * DockerClient makes requests to a Docker engine's API over its unix socket. Errors are
 * {@link WeftError}s with code EWEFT_UNAVAILABLE (no engine there, timeout, answer too large).
 */
export class DockerClient {
  constructor(
    readonly socketPath: string,
    private readonly timeoutMs = DOCKER_REQUEST_TIMEOUT_MS,
  ) {}

  /** get requests `path` and resolves with the answer, whatever its status. */
  get(path: string): Promise<DockerAnswer> {
    return new Promise((resolve, reject) => {
      const fail = (why: string, cause?: unknown): void =>
        reject(new WeftError('EWEFT_UNAVAILABLE', `docker engine at ${this.socketPath}: ${why}`, { cause }));
      const req = request({ socketPath: this.socketPath, path, method: 'GET', headers: { host: 'docker' } }, (res) => {
        const chunks: Buffer[] = [];
        let size = 0;
        res.on('data', (c: Buffer) => {
          size += c.length;
          if (size > DOCKER_BODY_MAX_BYTES) {
            req.destroy();
            fail(`answer to GET ${path} is larger than ${DOCKER_BODY_MAX_BYTES} bytes`);
            return;
          }
          chunks.push(c);
        });
        res.on('end', () => resolve({ status: res.statusCode ?? 0, body: Buffer.concat(chunks).toString('utf8') }));
        res.on('error', (err) => fail(err.message, err));
      });
      req.setTimeout(this.timeoutMs, () => {
        req.destroy();
        fail(`no answer to GET ${path} within ${this.timeoutMs} ms`);
      });
      req.on('error', (err) => fail(err.message, err));
      req.end();
    });
  }

  /** ping resolves when an engine answers `GET /_ping` with OK; rejects otherwise. */
  async ping(): Promise<void> {
    const r = await this.get('/_ping');
    if (r.status !== 200 || r.body.trim() !== 'OK') {
      throw new WeftError('EWEFT_UNAVAILABLE', `${this.socketPath} is not a docker engine (GET /_ping: ${r.status})`);
    }
  }

  /**
   * inspect looks a container up by name or id: undefined when the engine has none of that name,
   * the parsed container otherwise. A malformed answer rejects with EWEFT_UNAVAILABLE.
   */
  async inspect(ref: string): Promise<FoundContainer | undefined> {
    if (!/^[A-Za-z0-9][A-Za-z0-9_.-]{0,127}$/.test(ref)) return undefined;
    const r = await this.get(`/containers/${encodeURIComponent(ref)}/json`);
    if (r.status === 404) return undefined;
    if (r.status !== 200) {
      throw new WeftError('EWEFT_UNAVAILABLE', `docker engine: GET /containers/${ref}/json answered ${r.status}`);
    }
    return parseInspect(r.body);
  }

  /**
   * events opens the engine's event stream for containers starting and going away, and calls
   * `onEvent` for each well-formed one (`onBad` for each line it cannot use). Resolves with a
   * function that closes the stream; `onEnd` is called once when the stream ends or fails.
   */
  events(onEvent: (e: ContainerEvent) => void, onBad: () => void, onEnd: (err?: Error) => void): Promise<() => void> {
    // Network connects too: the network plugin names a container joined to a weft network (docker-plugin.ts).
    const filters = encodeURIComponent(
      JSON.stringify({ type: ['container', 'network'], event: ['start', 'destroy', 'connect'] }),
    );
    return new Promise((resolve, reject) => {
      let ended = false;
      const end = (err?: Error): void => {
        if (ended) return;
        ended = true;
        onEnd(err);
      };
      const req = request(
        { socketPath: this.socketPath, path: `/events?filters=${filters}`, method: 'GET', headers: { host: 'docker' } },
        (res) => {
          if (res.statusCode !== 200) {
            res.resume();
            reject(new WeftError('EWEFT_UNAVAILABLE', `docker engine: GET /events answered ${res.statusCode}`));
            req.destroy();
            return;
          }
          const lines = new LineSplitter(DOCKER_EVENT_MAX_BYTES);
          res.on('data', (c: Buffer) => {
            for (const line of lines.push(c)) {
              if (line === undefined) {
                onBad();
                continue;
              }
              const e = parseEvent(line);
              if (e === undefined) onBad();
              else onEvent(e);
            }
          });
          res.on('end', () => end());
          res.on('error', (err) => end(err));
          res.on('close', () => end());
          resolve(() => {
            ended = true;
            req.destroy();
          });
        },
      );
      // Only the wait for the answer's head is bounded: an idle stream is normal.
      const head = setTimeout(
        () => req.destroy(new Error(`no answer to GET /events within ${this.timeoutMs} ms`)),
        this.timeoutMs,
      );
      head.unref();
      req.on('response', () => clearTimeout(head));
      req.on('close', () => clearTimeout(head));
      req.on('error', (err) => {
        reject(
          new WeftError('EWEFT_UNAVAILABLE', `docker engine at ${this.socketPath}: ${err.message}`, { cause: err }),
        );
        end(err);
      });
      req.end();
    });
  }
}

/**
 * LineSplitter cuts a byte stream into lines of at most `max` bytes; a longer line comes out as
 * one `undefined` (dropped, to be counted), and nothing is buffered beyond `max`.
 */
export class LineSplitter {
  private parts: Buffer[] = [];
  private size = 0;
  private overlong = false;

  constructor(private readonly max: number) {}

  /** push takes the next chunk and returns the lines it completes (`undefined` for an overlong one). */
  push(chunk: Buffer): (string | undefined)[] {
    const out: (string | undefined)[] = [];
    let start = 0;
    for (let nl = chunk.indexOf(10, start); nl >= 0; nl = chunk.indexOf(10, start)) {
      this.take(chunk.subarray(start, nl));
      if (this.overlong) out.push(undefined);
      else {
        const line = Buffer.concat(this.parts).toString('utf8').trim();
        if (line !== '') out.push(line);
      }
      this.parts = [];
      this.size = 0;
      this.overlong = false;
      start = nl + 1;
    }
    this.take(chunk.subarray(start));
    return out;
  }

  private take(b: Buffer): void {
    if (this.overlong || b.length === 0) return;
    this.size += b.length;
    if (this.size > this.max) {
      this.overlong = true;
      this.parts = [];
      return;
    }
    this.parts.push(Buffer.from(b));
  }
}

const InspectSchema = z.object({
  Id: z.string().regex(/^[0-9a-f]{64}$/),
  Name: z.string().max(256),
  State: z.object({
    Running: z.boolean(),
    Pid: z
      .number()
      .int()
      .min(0)
      .max(2 ** 31),
  }),
});

/**
 * parseInspect reads what attach needs from `GET /containers/ID/json`: the full id (the record's
 * key), the name without its leading slash, and the pid of a running container. Throws
 * EWEFT_UNAVAILABLE on an answer that is not JSON or lacks those fields.
 */
export function parseInspect(body: string): FoundContainer {
  let json: unknown;
  try {
    json = JSON.parse(body);
  } catch (err) {
    throw new WeftError('EWEFT_UNAVAILABLE', 'docker engine: container inspect is not JSON', { cause: err });
  }
  const r = InspectSchema.safeParse(json);
  if (!r.success) {
    throw new WeftError(
      'EWEFT_UNAVAILABLE',
      `docker engine: malformed container inspect (${r.error.issues[0]?.path.join('.') || 'root'})`,
    );
  }
  const { Id, Name, State } = r.data;
  return {
    key: Id,
    name: Name.replace(/^\//, ''),
    pid: State.Running && State.Pid > 0 ? State.Pid : undefined,
  };
}

/**
 * ContainerEvent is one container event of the engine's stream (Weft acts on start and destroy),
 * or a network's connect of a container (action `connect`); other network events have action
 * `network-ACTION` and no id.
 */
export interface ContainerEvent {
  action: string;
  /** id is the container's full id ('' for a network event without one). */
  id: string;
}

const EventSchema = z.object({
  Type: z.literal('container'),
  Action: z.string().max(64),
  Actor: z.object({ ID: z.string().regex(/^[0-9a-f]{64}$/) }),
});

const NetworkEventSchema = z.object({
  Type: z.literal('network'),
  Action: z.string().max(64),
  Actor: z.object({
    Attributes: z
      .object({ container: z.string().max(64).optional() })
      .passthrough()
      .optional(),
  }),
});

/** parseEvent reads one line of `GET /events`; undefined for anything but a well-formed container or network event. */
export function parseEvent(line: string): ContainerEvent | undefined {
  let json: unknown;
  try {
    json = JSON.parse(line);
  } catch {
    return undefined;
  }
  const r = EventSchema.safeParse(json);
  if (r.success) return { action: r.data.Action, id: r.data.Actor.ID };
  const n = NetworkEventSchema.safeParse(json);
  if (!n.success) return undefined;
  const container = n.data.Actor.Attributes?.container ?? '';
  if (n.data.Action === 'connect' && isContainerKey(container)) return { action: 'connect', id: container };
  return { action: `network-${n.data.Action}`, id: '' };
}

/** DockerStatus is what `weft status` shows about Docker. */
export interface DockerStatus {
  socket: string;
  /** state: `connected` (the engine answers and its events are followed), `not found` (nothing answers there). */
  state: 'connected' | 'not found';
  /** events is true while the event stream is open. */
  events: boolean;
  /** badEvents counts lines of the event stream that were not usable. */
  badEvents: number;
  /** lastError is why the engine was last unreachable. */
  lastError?: string;
  /** plugin is the Docker network plugin's state, when it is on (`--docker-plugin`). */
  plugin?: DockerPluginStatus;
}

/** AttachActions are what the Docker integration does with the attacher. */
export interface AttachActions {
  /** attachedKeys lists the targets of attached containers. */
  attachedKeys(): string[];
  /** reattach plugs an attached container in again when its network namespace is new (a restart). */
  reattach(target: string): Promise<unknown>;
  /** detach unplugs a container and frees its address and names. */
  detach(target: string): Promise<unknown>;
}

/** DockerOptions configure {@link DockerIntegration}. */
export interface DockerOptions {
  socketPath: string;
  log: Logger;
  /** client replaces the engine client (tests). */
  client?: DockerClient;
  retryMinMs?: number;
  retryMaxMs?: number;
}

/**
 * DockerIntegration is the router's view of the Docker engine on its host: the
 * {@link ContainerEngine} attach asks to find containers, and a follower of the engine's events
 * that re-attaches restarted containers and detaches removed ones at once. Startable: `start()`
 * begins following (retrying with backoff while no engine answers); `stop()` closes the stream
 * and its timer. Idempotent.
 */
export class DockerIntegration implements ContainerEngine {
  private readonly client: DockerClient;
  private actions: AttachActions | undefined;
  private connected = false;
  private closeEvents: (() => void) | undefined;
  private timer: NodeJS.Timeout | undefined;
  private running = false;
  private retryMs: number;
  private badEvents = 0;
  private lastError: string | undefined;
  /** queue serializes event handling per container, so a destroy never overtakes a start. */
  private queue: Promise<void> = Promise.resolve();
  /** watchers see every event (the network plugin names the containers it joined). */
  private readonly watchers: ((e: ContainerEvent) => Promise<void>)[] = [];

  constructor(private readonly opts: DockerOptions) {
    this.client = opts.client ?? new DockerClient(opts.socketPath);
    this.retryMs = opts.retryMinMs ?? DOCKER_RETRY_MIN_MS;
  }

  /** bind gives the integration the attacher it re-attaches and detaches containers with. */
  bind(actions: AttachActions): void {
    this.actions = actions;
  }

  /** watch calls `fn` for every event, in order, after the attacher's own handling of it. */
  watch(fn: (e: ContainerEvent) => Promise<void>): void {
    this.watchers.push(fn);
  }

  /** find resolves a container name or id (see {@link ContainerEngine.find}); undefined without an engine. */
  async find(target: string): Promise<FoundContainer | undefined> {
    try {
      return await this.client.inspect(target);
    } catch (err) {
      this.opts.log.debug('docker: cannot look a container up', { container: target, err: errorMessage(err) });
      return undefined;
    }
  }

  status(): DockerStatus {
    return {
      socket: this.opts.socketPath,
      state: this.connected ? 'connected' : 'not found',
      events: this.closeEvents !== undefined,
      badEvents: this.badEvents,
      ...(this.lastError === undefined ? {} : { lastError: this.lastError }),
    };
  }

  start(): void {
    if (this.running) return;
    this.running = true;
    void this.connect();
  }

  stop(): void {
    this.running = false;
    if (this.timer !== undefined) clearTimeout(this.timer);
    this.timer = undefined;
    this.closeEvents?.();
    this.closeEvents = undefined;
    this.connected = false;
  }

  /** drained resolves once every event received so far has been acted on (tests). */
  drained(): Promise<void> {
    return this.queue;
  }

  private async connect(): Promise<void> {
    if (!this.running) return;
    try {
      await this.client.ping();
      const close = await this.client.events(
        (e) => this.enqueue(() => this.onEvent(e)),
        () => {
          this.badEvents++;
        },
        (err) => {
          this.closeEvents = undefined;
          this.connected = false;
          if (err !== undefined) this.lastError = errorMessage(err);
          if (this.running) {
            this.opts.log.warn('docker: event stream ended; reconnecting', { socket: this.opts.socketPath });
            this.retry();
          }
        },
      );
      if (!this.running) {
        close();
        return;
      }
      this.closeEvents = close;
      this.connected = true;
      this.lastError = undefined;
      this.retryMs = this.opts.retryMinMs ?? DOCKER_RETRY_MIN_MS;
      this.opts.log.info('docker: connected', { socket: this.opts.socketPath });
      // Events missed while not connected: removed containers go, restarted ones come back.
      this.enqueue(() => this.resync());
    } catch (err) {
      this.connected = false;
      const why = errorMessage(err);
      if (this.lastError !== why) this.opts.log.debug('docker: no engine', { socket: this.opts.socketPath, err: why });
      this.lastError = why;
      this.retry(isAbsent(err));
    }
  }

  /** retry connects again after the backoff; `absent`: the engine's socket does not exist (see DOCKER_RETRY_ABSENT_FACTOR). */
  private retry(absent = false): void {
    if (!this.running || this.timer !== undefined) return;
    const wait = this.retryMs;
    const max = this.opts.retryMaxMs ?? DOCKER_RETRY_MAX_MS;
    this.retryMs = Math.min(this.retryMs * 2, absent ? max * DOCKER_RETRY_ABSENT_FACTOR : max);
    this.timer = setTimeout(() => {
      this.timer = undefined;
      void this.connect();
    }, wait);
    this.timer.unref();
  }

  private enqueue(job: () => Promise<void>): void {
    this.queue = this.queue.then(job).catch((err: unknown) => {
      this.opts.log.warn('docker: cannot act on an event', { err: errorMessage(err) });
    });
  }

  private async onEvent(e: ContainerEvent): Promise<void> {
    try {
      await this.onAttachedEvent(e);
    } finally {
      for (const fn of this.watchers) await fn(e);
    }
  }

  private async onAttachedEvent(e: ContainerEvent): Promise<void> {
    const actions = this.actions;
    if (actions === undefined || !actions.attachedKeys().includes(e.id)) return;
    if (e.action === 'destroy') {
      await actions.detach(e.id);
      this.opts.log.info('docker: container removed; detached', { container: e.id.slice(0, 12) });
    } else if (e.action === 'start') {
      await actions.reattach(e.id);
    }
  }

  /** resync detaches attached containers the engine no longer has and re-attaches running ones. */
  private async resync(): Promise<void> {
    const actions = this.actions;
    if (actions === undefined) return;
    for (const key of actions.attachedKeys().filter(isContainerKey)) {
      let c: FoundContainer | undefined;
      try {
        c = await this.client.inspect(key);
      } catch {
        continue; // the engine is unsure: keep it
      }
      try {
        if (c === undefined) await actions.detach(key);
        else if (c.pid !== undefined) await actions.reattach(key);
      } catch (err) {
        this.opts.log.warn('docker: cannot resync a container', {
          container: key.slice(0, 12),
          err: errorMessage(err),
        });
      }
    }
  }
}

/** isAbsent says whether a failure to reach the engine was its socket not existing (ENOENT). */
function isAbsent(err: unknown): boolean {
  const cause = err instanceof Error ? err.cause : undefined;
  return cause instanceof Error && (cause as NodeJS.ErrnoException).code === 'ENOENT';
}
