// The graphical console of one server: a one-time `novnc` URL from
// POST /v1/servers/{id}/remote-consoles, given to noVNC, which opens the WebSocket itself.

import RFB from './vendor/novnc/core/rfb.js';
import { call } from './api.js';

/** One VNC view, reused for whichever server is selected. */
export class VncConsole {
  /**
   * `container` holds noVNC's canvas; `onState(state, text)` reports the session (`state`:
   * connecting, connected, failed or closed).
   */
  constructor(container, onState) {
    this.container = container;
    this.onState = onState;
    this.rfb = null;
    /** Counts opens and closes: an open whose URL arrives after a newer one is dropped. */
    this.generation = 0;
    /** True while a URL is being asked for. */
    this.opening = false;
  }

  /** Opens the display of server `id`. */
  async open(id) {
    this.close();
    const generation = this.generation;
    this.onState('connecting', 'connecting…');
    this.opening = true;
    let answer;
    try {
      answer = await call('POST', `/v1/servers/${encodeURIComponent(id)}/remote-consoles`, { type: 'novnc' });
    } catch (e) {
      if (generation === this.generation) {
        this.opening = false;
        this.onState('failed', `not connected: ${e.message}`);
      }
      return;
    }
    // Closed or opened again meanwhile: this URL is not used (it expires unopened).
    if (generation !== this.generation) return;
    this.opening = false;
    const rfb = new RFB(this.container, answer.url, { wsProtocols: ['binary'] });
    rfb.scaleViewport = true;
    rfb.resizeSession = false;
    rfb.addEventListener('connect', () => this.onState('connected', 'connected'));
    rfb.addEventListener('disconnect', (e) => {
      if (this.rfb !== rfb) return;
      this.onState('closed', e.detail.clean ? 'disconnected' : 'connection lost');
      this.rfb = null;
    });
    rfb.addEventListener('securityfailure', (e) => {
      this.onState('failed', `refused: ${e.detail.reason ?? e.detail.status}`);
    });
    this.rfb = rfb;
  }

  /** Whether a session is open or being opened. */
  get active() {
    return this.opening || this.rfb !== null;
  }

  /** Ends the session (if any). */
  close() {
    this.generation += 1;
    this.opening = false;
    const { rfb } = this;
    this.rfb = null;
    if (rfb) rfb.disconnect();
    this.container.replaceChildren();
  }
}
