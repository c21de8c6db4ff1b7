// Pinned hashing. hashKey, rendezvousSlot and pickServer decide where every user lives: changing
// any of them re-shuffles every key in production. tests/routing/fixtures/*.json pin them.
import type { Server } from '../conf/types';

/** MurmurHash3 x86_32 of the UTF-8 bytes of `key`, seed 0. Never change. */
export function hashKey(key: string): number {
  for (let i = 0; i < key.length; i++) {
    if (key.charCodeAt(i) > 0x7f) return murmurBytes(Buffer.from(key, 'utf8'));
  }
  return murmurAscii(key);
}

// ASCII fast path: char codes are the UTF-8 bytes, no Buffer allocation (runs per request).
function murmurAscii(s: string): number {
  const n = s.length, nb = n & ~3;
  let h = 0;
  for (let i = 0; i < nb; i += 4) {
    h = mixBlock(h, s.charCodeAt(i) | (s.charCodeAt(i + 1) << 8) | (s.charCodeAt(i + 2) << 16) | (s.charCodeAt(i + 3) << 24));
  }
  let k = 0;
  switch (n & 3) {
    case 3: k ^= s.charCodeAt(nb + 2) << 16; // fallthrough
    case 2: k ^= s.charCodeAt(nb + 1) << 8;  // fallthrough
    case 1: k ^= s.charCodeAt(nb); h ^= tailMix(k);
  }
  return fmix32(h ^ n);
}

function murmurBytes(b: Uint8Array): number {
  const n = b.length, nb = n & ~3;
  let h = 0;
  for (let i = 0; i < nb; i += 4) h = mixBlock(h, b[i] | (b[i + 1] << 8) | (b[i + 2] << 16) | (b[i + 3] << 24));
  let k = 0;
  switch (n & 3) {
    case 3: k ^= b[nb + 2] << 16; // fallthrough
    case 2: k ^= b[nb + 1] << 8;  // fallthrough
    case 1: k ^= b[nb]; h ^= tailMix(k);
  }
  return fmix32(h ^ n);
}

function mixBlock(h: number, k: number): number {
  k = Math.imul(k, 0xcc9e2d51);
  k = (k << 15) | (k >>> 17);
  k = Math.imul(k, 0x1b873593);
  h ^= k;
  h = (h << 13) | (h >>> 19);
  return (Math.imul(h, 5) + 0xe6546b64) | 0;
}

function tailMix(k: number): number {
  k = Math.imul(k, 0xcc9e2d51);
  k = (k << 15) | (k >>> 17);
  return Math.imul(k, 0x1b873593);
}

/** MurmurHash3 finalizer: a bijective avalanche mix of 32 bits. */
export function fmix32(h: number): number {
  h ^= h >>> 16;
  h = Math.imul(h, 0x85ebca6b);
  h ^= h >>> 13;
  h = Math.imul(h, 0xc2b2ae35);
  h ^= h >>> 16;
  return h >>> 0;
}

/**
 * Rendezvous score of (key hash, slot id): fmix32 of the key hash XOR a mixed slot id. The key
 * is hashed once per decision, not once per slot; fmix32 being a bijection, two slots never tie.
 */
export function slotScore(h: number, slot: number): number {
  return fmix32(h ^ fmix32((slot + 0x9e3779b9) | 0));
}

/** The slot with the highest score for `key` (highest random weight). -1 when there is none. */
export function rendezvousSlot(key: string, slots: readonly number[]): number {
  const h = hashKey(key);
  let best = -1, bestScore = -1;
  for (let i = 0; i < slots.length; i++) {
    const s = slotScore(h, slots[i]);
    if (s > bestScore || (s === bestScore && slots[i] < best)) { bestScore = s; best = slots[i]; }
  }
  return best;
}

/** All slots, best first: the order in which bounded load and fallbacks try them. */
export function rankSlots(key: string, slots: readonly number[]): number[] {
  const h = hashKey(key);
  return slots.map((slot) => ({ slot, score: slotScore(h, slot) }))
    .sort((a, b) => b.score - a.score || a.slot - b.slot)
    .map((x) => x.slot);
}

const idHashes = new Map<string, number>();
function idHash(id: string): number {
  let h = idHashes.get(id);
  if (h === undefined) {
    h = fmix32((hashKey(id) + 0x7f4a7c15) | 0);
    if (idHashes.size > 100_000) idHashes.clear();   // bound: ids come from configs, few
    idHashes.set(id, h);
  }
  return h;
}

/**
 * Weighted rendezvous over the healthy servers, by Server.id: score = -weight / ln(u), u uniform
 * in (0,1) from hash(key, id). A server's share of keys is proportional to its weight; removing
 * one server moves only the keys it had. Same answer in every process and every instance.
 */
export function pickServer(key: string, servers: readonly Server[], healthy?: (s: Server) => boolean): Server | null {
  const h = hashKey(key);
  let best: Server | null = null, bestScore = -Infinity;
  for (let i = 0; i < servers.length; i++) {
    const s = servers[i];
    if (healthy !== undefined && !healthy(s)) continue;
    const u = (fmix32(h ^ idHash(s.id)) + 0.5) / 4294967296;
    const score = -s.weight / Math.log(u);
    if (score > bestScore || (score === bestScore && best !== null && s.id < best.id)) { bestScore = score; best = s; }
  }
  return best;
}
