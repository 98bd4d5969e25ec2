/**
 * Limits on control connections before they authenticate (issue "Nobody gets in", part 4).
 *
 * Until its Hello (and, with a password, its Auth) is verified, a connection is a stranger: it may
 * make us hold only a few KiB, and strangers share a small pool of handshake slots of their own, so
 * that junk can neither grow our memory nor crowd out a real peer. Established connections count
 * against the connection limit (CONN_LIMIT_DEFAULT, `--conn-limit`) only; connections we dial
 * (our own targets) never count against the inbound handshake pool.
 *
 * Candidates for router/constants.ts ("implementation" section).
 */

/**
 * HELLO_MAX_BYTES is the largest frame body accepted before the handshake completes; a longer
 * length prefix closes the connection as soon as its 4 bytes arrive, before anything is allocated.
 * Reason: a Hello is about 250 bytes (a nickname of at most 64 characters), an Auth about 50 and a
 * Close at most about 800 (256 UTF-16 units); 4 KiB leaves room for fields later versions may add,
 * and is all an unauthenticated connection can make us buffer (instead of 8 MiB).
 */
export const HELLO_MAX_BYTES = 4 * 1024;

/**
 * HANDSHAKES_MAX caps inbound connections still in their handshake, over all source addresses;
 * more from an address not known as a peer's are refused at once. Reason: a handshake takes one or
 * two round trips, so even a whole cluster restarting together needs few slots at once, while 32 ×
 * (HELLO_MAX_BYTES + one socket read) bounds what strangers can hold (about 2 MiB).
 */
export const HANDSHAKES_MAX = 32;

/**
 * HANDSHAKES_PER_ADDR_MAX caps inbound handshakes in progress from one source address; more are
 * refused at once, known peer or not. Reason: a router dials a peer once (a redial may overlap a
 * closing attempt), so 4 leaves room for a few routers behind one NAT address, while one junk
 * source can hold only 4 of the HANDSHAKES_MAX slots and cannot lock out anyone else.
 */
export const HANDSHAKES_PER_ADDR_MAX = 4;

/**
 * KNOWN_PEER_ADDRS_MAX bounds the remembered source addresses of connections that completed a
 * handshake (oldest forgotten first). Inbound handshakes from such an address, or from a target's
 * address, are not refused by HANDSHAKES_MAX (only by HANDSHAKES_PER_ADDR_MAX): a real peer that
 * restarts gets in even while strangers from many addresses fill the pool. Reason: far more
 * than the peers one router sees (the connection limit is 200), and 1024 short strings is nothing.
 */
export const KNOWN_PEER_ADDRS_MAX = 1024;

/**
 * REFUSE_LINGER_MS is how long a refused inbound socket waits, after our Close frame, for the
 * other end's FIN before it is destroyed. Reason: a real peer answers our Close within one round
 * trip; junk that never answers must not hold a socket for long.
 */
export const REFUSE_LINGER_MS = 1_000;

/**
 * REFUSED_LINGER_MAX caps refused sockets lingering at once; beyond it a refused socket is
 * destroyed without a Close frame. Reason: under a flood of connects, file descriptors and
 * sockets held for refusals must stay bounded whatever the rate.
 */
export const REFUSED_LINGER_MAX = 64;

/**
 * LINGER_DISCARD_MAX_BYTES is the most a connection that never completed its handshake (or a
 * refused socket) may send us while it lingers after our Close; more destroys the socket at once.
 * Reason: a real peer has at most a Hello and an Auth in flight; reading megabytes of junk only to
 * throw them away is CPU an attacker should not get.
 */
export const LINGER_DISCARD_MAX_BYTES = 64 * 1024;

/**
 * REFUSALS_LOG_INTERVAL_MS is the least time between two "inbound connections refused" warnings
 * (each says how many were refused since the last). Reason: a flood must not become a log flood.
 */
export const REFUSALS_LOG_INTERVAL_MS = 10_000;

/** TERMINATION_HANDSHAKE_LIMIT counts (in `terminations`) inbound connections refused by HANDSHAKES_MAX or HANDSHAKES_PER_ADDR_MAX. */
export const TERMINATION_HANDSHAKE_LIMIT = 'handshake_limit';

/** TERMINATION_CONN_LIMIT counts (in `terminations`) inbound connections refused by the connection limit. */
export const TERMINATION_CONN_LIMIT = 'conn_limit';
