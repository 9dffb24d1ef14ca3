// One-time console URLs (POST /v1/servers/{id}/remote-consoles) for a console view that may
// be closed or opened again while it waits: the answer to a superseded request is dropped
// (its URL expires unopened), so a view never shows another server's console.

import { call } from './api.js';

/** The URL requests of one console view. */
export class ConsoleUrls {
  constructor() {
    /** Counts requests and cancels: an answer for an older one is dropped. */
    this.generation = 0;
    /** True while a request waits for its answer. */
    this.pending = false;
  }

  /** Drops the answer of the request waiting, if any. */
  cancel() {
    this.generation += 1;
    this.pending = false;
  }

  /**
   * The agent's answer for a console of server `id` (`body` says which), or null when
   * cancelled meanwhile. Throws the ApiError of a refusal (unless cancelled meanwhile).
   */
  async request(id, body) {
    this.cancel();
    const generation = this.generation;
    this.pending = true;
    try {
      const answer = await call('POST', `/v1/servers/${encodeURIComponent(id)}/remote-consoles`, body);
      return generation === this.generation ? answer : null;
    } catch (e) {
      if (generation !== this.generation) return null;
      throw e;
    } finally {
      if (generation === this.generation) this.pending = false;
    }
  }
}
