// A small in-memory cache of decoded images keyed by request URL, with shared in-flight loads.

import { getImage } from "./api.js";

/**
 * Decoded images (ImageBitmaps with their headers) by URL, least recently used evicted first
 * once their pixels exceed a budget. A load in flight is shared by everyone who asks for the
 * same URL; each asker is an owner, and the request is aborted when its last owner lets go.
 * An image on screen is pinned: evicting it drops it from the cache but keeps it drawable.
 */
export class ImageCache {
  constructor(budgetBytes = 256 * 1024 * 1024) {
    this.budget = budgetBytes;
    this.bytes = 0;
    this.entries = new Map();
    this.pending = new Map();
  }

  static pin(entry) {
    entry.pins = (entry.pins ?? 0) + 1;
  }

  static unpin(entry) {
    entry.pins = Math.max(0, (entry.pins ?? 0) - 1);
    if (entry.pins === 0 && entry.evicted) entry.bitmap.close();
  }

  /** The cached image of `url` (marking it recently used), or undefined. */
  get(url) {
    const entry = this.entries.get(url);
    if (entry) {
      this.entries.delete(url);
      this.entries.set(url, entry);
    }
    return entry;
  }

  isPending(url) {
    return this.pending.has(url);
  }

  put(url, entry) {
    const previous = this.entries.get(url);
    if (previous) this.evict(url, previous);
    entry.bytes = entry.width * entry.height * 4;
    this.entries.set(url, entry);
    this.bytes += entry.bytes;
    while (this.bytes > this.budget && this.entries.size > 1) {
      const [oldest, old] = this.entries.entries().next().value;
      this.evict(oldest, old);
    }
  }

  evict(url, entry) {
    this.entries.delete(url);
    this.bytes -= entry.bytes;
    entry.evicted = true;
    if (!entry.pins) entry.bitmap.close();
  }

  /** The image of `url`: from the cache, from a load in flight, or from a new request. */
  load(url, owner, { raw = false } = {}) {
    const cached = this.get(url);
    if (cached) return Promise.resolve(cached);
    let pending = this.pending.get(url);
    if (!pending) {
      const controller = new AbortController();
      pending = { controller, owners: new Set(), promise: null };
      pending.promise = getImage(url, { signal: controller.signal, raw })
        .then((entry) => {
          this.put(url, entry);
          return entry;
        })
        .finally(() => {
          if (this.pending.get(url) === pending) this.pending.delete(url);
        });
      this.pending.set(url, pending);
    }
    pending.owners.add(owner);
    return pending.promise;
  }

  /** `owner` no longer needs `url`; the request is cancelled when nobody else does. */
  release(url, owner) {
    const pending = this.pending.get(url);
    if (!pending) return;
    pending.owners.delete(owner);
    if (pending.owners.size === 0) {
      this.pending.delete(url);
      pending.controller.abort();
    }
  }

  /** Release every load of `owner` whose URL `keep` does not accept. */
  releaseAll(owner, keep = () => false) {
    for (const [url, pending] of [...this.pending]) {
      if (pending.owners.has(owner) && !keep(url)) this.release(url, owner);
    }
  }
}

export const isAbort = (error) => error && error.name === "AbortError";
