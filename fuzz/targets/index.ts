/** TARGETS lists every fuzz target, in the order `npm run fuzz` runs them. */
import type { FuzzTarget } from '../target.js';
import { controlFrames } from './control.js';
import { sleeveDatapath, vxlanDatapath } from './datapath.js';
import { dnsQuery, dnsUpstream } from './dns.js';
import { dnsGossip, ipamGossip, topologyGossip } from './gossip.js';
import { httpBodies } from './http.js';
import { stateFiles } from './state.js';

export const TARGETS: readonly FuzzTarget[] = [
  sleeveDatapath,
  vxlanDatapath,
  controlFrames,
  topologyGossip,
  ipamGossip,
  dnsGossip,
  dnsQuery,
  dnsUpstream,
  httpBodies,
  stateFiles,
];
