#!/usr/bin/env node
/**
 * kube-peers runs beside the router in the DaemonSet (as Weave's kube-utils did): it reads the
 * cluster's Node list through the official client (@kubernetes/client-node, in-cluster service
 * account, RBAC: get/list/watch nodes) and tells the router of this node, over its API socket:
 *
 * - `POST /connect {peers, replace: true}`: the InternalIP of every other Node, so a new node is
 *   a target at once and a deleted one stops being retried;
 * - `POST /rmpeer {peer}` for a Node that was deleted: its address space is taken over. The router
 *   is launched with `--nickname $(NODE_NAME)`, so the Node's name is its peer's nickname. Only one
 *   router may reclaim a share: the Node with the smallest name among the live ones does it. A
 *   Node deleted while its router still answers (the router refuses: 409) is asked again every
 *   round until the router takes its space over (2xx) or says there is nothing to take (404).
 *
 * It polls every WEFT_KUBE_PEERS_INTERVAL_S (default 30) seconds; a failed round is logged and
 * the next one tried. Pure parts ({@link nodePeers}, {@link reclaimer}) are tested on NodeList
 * JSON as an API server returns it (k8s/kube-peers.test.ts).
 */
import { request } from 'node:http';

/** NodeJson is the part of a v1 Node this reads. */
export interface NodeJson {
  metadata?: { name?: string };
  status?: { addresses?: { type?: string; address?: string }[] };
}

/** NodePeer is a Node as a Weft peer: its name (the peer's nickname) and its InternalIP. */
export interface NodePeer {
  name: string;
  ip: string;
}

/**
 * nodePeers lists the Nodes of a NodeList (`items`) with an InternalIP, sorted by name; a Node
 * with several InternalIPs gives its first IPv4 one (the one Weft's underlay uses).
 */
export function nodePeers(items: readonly NodeJson[]): NodePeer[] {
  const out: NodePeer[] = [];
  for (const n of items) {
    const name = n.metadata?.name;
    const ip = (n.status?.addresses ?? []).find(
      (a) => a.type === 'InternalIP' && typeof a.address === 'string' && /^\d{1,3}(\.\d{1,3}){3}$/.test(a.address),
    )?.address;
    if (name !== undefined && ip !== undefined) out.push({ name, ip });
  }
  return out.sort((a, b) => (a.name < b.name ? -1 : a.name > b.name ? 1 : 0));
}

/** targetsFor is what this node's router connects to: every other Node's InternalIP. */
export function targetsFor(peers: readonly NodePeer[], self: string): string[] {
  return peers.filter((p) => p.name !== self).map((p) => p.ip);
}

/** reclaimer says whether `self` is the one router that reclaims deleted Nodes' space (the smallest live name). */
export function reclaimer(peers: readonly NodePeer[], self: string): boolean {
  return peers.length > 0 && peers[0]?.name === self;
}

/** deleted lists the names seen before and gone now. */
export function deleted(before: ReadonlySet<string>, now: readonly NodePeer[]): string[] {
  const live = new Set(now.map((p) => p.name));
  return [...before].filter((n) => !live.has(n)).sort();
}

/**
 * reclaimSettled says whether an answer to `POST /rmpeer` ends the attempts for a deleted Node:
 * done (2xx) or nothing to take over (404: no such peer, or it owns no space); a refusal because
 * the peer is still reachable (409), an error or no answer means: ask again next round.
 */
export function reclaimSettled(status: number): boolean {
  return (status >= 200 && status < 300) || status === 404;
}

/** post sends one JSON request to the router's API socket; resolves its status code. */
function post(socket: string, path: string, body: unknown): Promise<number> {
  const payload = Buffer.from(JSON.stringify(body));
  return new Promise((resolve, reject) => {
    const req = request(
      {
        socketPath: socket,
        method: 'POST',
        path,
        timeout: 10_000,
        headers: { host: 'localhost', 'content-type': 'application/json', 'content-length': payload.length },
      },
      (res) => {
        res.resume();
        res.on('end', () => resolve(res.statusCode ?? 0));
      },
    );
    req.on('timeout', () => req.destroy(new Error('no answer from the router within 10 s')));
    req.on('error', reject);
    req.end(payload);
  });
}

/** run is the sidecar's loop (see the module comment). */
async function run(): Promise<void> {
  const self = process.env.NODE_NAME ?? '';
  if (self === '') throw new Error('NODE_NAME is not set (the DaemonSet gives it from spec.nodeName)');
  const socket = process.env.WEFT_API_SOCKET ?? '/run/weft/weft.sock';
  const intervalMs = Number(process.env.WEFT_KUBE_PEERS_INTERVAL_S ?? '30') * 1000;
  const k8s = await import('@kubernetes/client-node');
  const kc = new k8s.KubeConfig();
  kc.loadFromDefault();
  const core = kc.makeApiClient(k8s.CoreV1Api);
  let seen = new Set<string>();
  /** pending: deleted Nodes whose space is not taken over yet (see reclaimSettled). */
  const pending = new Set<string>();
  for (;;) {
    try {
      const list = await core.listNode();
      const peers = nodePeers(list.items as NodeJson[]);
      const status = await post(socket, '/connect', { peers: targetsFor(peers, self), replace: true });
      if (status >= 300) console.error(`kube-peers: connect answered HTTP ${status}`);
      for (const gone of deleted(seen, peers)) pending.add(gone);
      seen = new Set(peers.map((p) => p.name));
      for (const name of seen) pending.delete(name); // registered again
      if (reclaimer(peers, self)) {
        for (const gone of [...pending]) {
          const s = await post(socket, '/rmpeer', { peer: gone });
          console.error(`kube-peers: node ${gone} deleted: rmpeer answered HTTP ${s}`);
          if (reclaimSettled(s)) pending.delete(gone);
        }
      }
    } catch (err) {
      console.error(`kube-peers: ${(err as Error).message}`);
    }
    await new Promise((r) => setTimeout(r, intervalMs));
  }
}

if (process.argv[1]?.endsWith('kube-peers.js')) {
  run().catch((err: Error) => {
    console.error(`kube-peers: ${err.message}`);
    process.exit(1);
  });
}
