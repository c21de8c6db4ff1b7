// Public API of routing/: match a request head to a route and a sticky key, and place keys on
// worker slots and backend servers with pinned hashing.
export { Router, type Decision } from './router';
export type { Head } from './request';
export { hashKey, rendezvousSlot, rankSlots, pickServer } from './hash';
export { Placement, type KeyPlacement } from './placement';
