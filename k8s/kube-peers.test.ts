import { describe, expect, it } from 'vitest';
import { deleted, type NodeJson, nodePeers, reclaimer, reclaimSettled, targetsFor } from './kube-peers.js';

/** NODE_LIST is a NodeList as a v1.29 API server answers GET /api/v1/nodes (trimmed of images and conditions). */
const NODE_LIST = {
  kind: 'NodeList',
  apiVersion: 'v1',
  metadata: { resourceVersion: '48213' },
  items: [
    {
      metadata: {
        name: 'worker-b',
        uid: '8b9d6c2e-3f41-4d7a-9a51-0f6b1b3c2d10',
        resourceVersion: '48190',
        creationTimestamp: '2026-11-30T09:12:44Z',
        labels: { 'kubernetes.io/hostname': 'worker-b', 'kubernetes.io/os': 'linux' },
        annotations: { 'node.alpha.kubernetes.io/ttl': '0' },
      },
      spec: { podCIDR: '10.244.2.0/24', podCIDRs: ['10.244.2.0/24'] },
      status: {
        addresses: [
          { type: 'InternalIP', address: '192.168.1.12' },
          { type: 'Hostname', address: 'worker-b' },
        ],
        nodeInfo: { kubeletVersion: 'v1.29.4', containerRuntimeVersion: 'containerd://1.6.20' },
      },
    },
    {
      metadata: { name: 'control-plane', uid: '1c0e…', labels: { 'node-role.kubernetes.io/control-plane': '' } },
      spec: { taints: [{ key: 'node-role.kubernetes.io/control-plane', effect: 'NoSchedule' }] },
      status: {
        addresses: [
          { type: 'InternalIP', address: 'fd00::10' },
          { type: 'InternalIP', address: '192.168.1.10' },
          { type: 'ExternalIP', address: '203.0.113.7' },
          { type: 'Hostname', address: 'control-plane' },
        ],
      },
    },
    {
      metadata: { name: 'worker-a' },
      status: {
        addresses: [
          { type: 'Hostname', address: 'worker-a' },
          { type: 'InternalIP', address: '192.168.1.11' },
        ],
      },
    },
    // Registered but without addresses yet (a kubelet that just started): not a peer.
    { metadata: { name: 'worker-c' }, status: {} },
  ],
};

describe('kube-peers', () => {
  const peers = nodePeers(NODE_LIST.items as NodeJson[]);

  it("takes each Node's first IPv4 InternalIP, sorted by name, and skips Nodes with none", () => {
    expect(peers).toEqual([
      { name: 'control-plane', ip: '192.168.1.10' },
      { name: 'worker-a', ip: '192.168.1.11' },
      { name: 'worker-b', ip: '192.168.1.12' },
    ]);
  });

  it('connects each router to every other Node', () => {
    expect(targetsFor(peers, 'worker-a')).toEqual(['192.168.1.10', '192.168.1.12']);
  });

  it('lets exactly one router, the smallest live name, reclaim deleted Nodes', () => {
    expect(peers.filter((p) => reclaimer(peers, p.name)).map((p) => p.name)).toEqual(['control-plane']);
    expect(reclaimer([], 'x')).toBe(false);
  });

  it('finds the Nodes deleted since the last list', () => {
    expect(deleted(new Set(['worker-a', 'worker-z', 'control-plane']), peers)).toEqual(['worker-z']);
    expect(deleted(new Set(), peers)).toEqual([]);
  });

  it('asks again for a deleted Node the router refused (still reachable) or did not answer, not after done or 404', () => {
    expect([200, 204, 404].map(reclaimSettled)).toEqual([true, true, true]);
    expect([0, 409, 500, 503].map(reclaimSettled)).toEqual([false, false, false, false]);
  });
});
