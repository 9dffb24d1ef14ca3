// The graphical console of one server: a one-time `novnc` URL from
// POST /v1/servers/{id}/remote-consoles, given to noVNC, which opens the WebSocket itself.

import RFB from './vendor/novnc/core/rfb.js';
import { ConsoleUrls } from './console-url.js';

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
    this.urls = new ConsoleUrls();
  }

  /** Opens the display of server `id`. */
  async open(id) {
    this.close();
    this.onState('connecting', 'connecting…');
    let answer;
    try {
      answer = await this.urls.request(id, { type: 'novnc' });
    } catch (e) {
      this.onState('failed', `not connected: ${e.message}`);
      return;
    }
    if (answer === null) return;
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
    return this.urls.pending || this.rfb !== null;
  }

  /** Ends the session (if any). */
  close() {
    this.urls.cancel();
    const { rfb } = this;
    this.rfb = null;
    if (rfb) rfb.disconnect();
    this.container.replaceChildren();
  }
}
