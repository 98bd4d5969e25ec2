/**
 * The gossip vocabulary of weaveworks/mesh, split by direction: {@link Gossip} sends,
 * {@link Gossiper} receives, {@link GossipData} is what is sent. A subsystem (topology, IPAM, DNS)
 * implements a Gossiper and is handed a Gossip; it never sees connections or routes.
 */
import type { PeerName } from '../../common/types.js';

/**
 * GossipData is a mergeable dataset (think: a set of versioned records). Merging is the
 * receiver's business; the sender only needs the bytes.
 */
export interface GossipData {
  /** encode returns the wire form in a buffer the caller owns. */
  encode(): Uint8Array;
}

/**
 * Gossiper is the receiving side of one gossip channel. Calls are synchronous and come one at a
 * time. A payload the gossiper cannot accept is refused by throwing (ProtocolError); the channel
 * counts it and forwards nothing.
 *
 * Payloads are borrowed: valid until the call returns; copy what is kept.
 */
export interface Gossiper {
  /**
   * onGossip merges a payload (a delta or a full state) from `src`, the neighbour it came from,
   * and returns the part that was new to us, encoded, for the channel to pass on; undefined when
   * nothing was new (which is what stops an epidemic).
   */
  onGossip(src: PeerName, payload: Uint8Array): Uint8Array | undefined;
  /** onGossipUnicast receives a payload `src` (its originator, possibly several hops away) sent to us alone. */
  onGossipUnicast(src: PeerName, payload: Uint8Array): void;
  /** fullState returns everything we know, for a new neighbour and for periodic anti-entropy; empty when nothing. */
  fullState(): Uint8Array;
  /** announcing, if present, lets the channel announce this gossiper's deltas lazily (see {@link Announcing}). */
  readonly announcing?: Announcing;
}

/**
 * Announcing is what a gossiper adds to take part in lazy push (see channel.ts): its records are
 * named by fixed-size ids (the record and its version), so a peer can be told what we have in a
 * few bytes and ask for what it lacks. A gossiper without it is gossiped eagerly only.
 *
 * Ids are opaque to the channel but compared byte for byte: two ids are the same version of the
 * same record exactly when their bytes are equal.
 */
export interface Announcing {
  /** idBytes is the length of one id (every id has it; at least 1). */
  readonly idBytes: number;
  /**
   * ids returns the ids of the records a delta carries (the delta was returned by onGossip, or
   * broadcast by us), concatenated: what an announcement of it says. May name the version we hold
   * now where that is newer.
   */
  ids(delta: Uint8Array): Uint8Array;
  /**
   * holds says whether we hold the version the id at `off` names, or a newer one (nothing to ask
   * for). Throws ProtocolError for an id that cannot be valid.
   *
   * @param ids borrowed: valid until the call returns.
   */
  holds(ids: Uint8Array, off: number): boolean;
  /**
   * answer returns a delta holding what we hold of the records the ids name (concatenated, as
   * `ids` returns them), encoded as onGossip accepts it; empty when we hold none. Throws ProtocolError.
   *
   * @param ids borrowed: valid until the call returns.
   */
  answer(ids: Uint8Array): Uint8Array;
}

/**
 * Gossip is the sending side of one gossip channel.
 *
 * `broadcast` is epidemic: the payload goes to a random O(log N) subset of neighbours, each of which
 * merges it and passes on only what was new to it, so a payload must be a mergeable delta (a
 * re-delivery must change nothing). `unicast` reaches one peer along the unicast routes, relayed by
 * peers that need not know the channel.
 */
export interface Gossip {
  /** broadcast spreads a delta to every peer eventually; `include` names neighbours it must go to directly. */
  broadcast(payload: Uint8Array, include?: readonly PeerName[]): void;
  /** unicast sends a payload to one peer; false when there is no route to it (nothing was sent). */
  unicast(dst: PeerName, payload: Uint8Array): boolean;
}

/** NullGossiper implements Gossiper with no-ops: it knows nothing and learns nothing. */
export class NullGossiper implements Gossiper {
  /** onGossip accepts and ignores the payload. */
  onGossip(): undefined {
    return undefined;
  }

  /** onGossipUnicast accepts and ignores the payload. */
  onGossipUnicast(): void {}

  /** fullState is always empty, so nothing is ever pushed. */
  fullState(): Uint8Array {
    return new Uint8Array(0);
  }
}

/** NullGossip implements Gossip with no-ops, for a subsystem running without a mesh. */
export class NullGossip implements Gossip {
  /** broadcast drops the payload. */
  broadcast(): void {}

  /** unicast drops the payload and reports no route. */
  unicast(): boolean {
    return false;
  }
}
