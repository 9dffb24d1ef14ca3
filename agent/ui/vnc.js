// The graphical console of one server: a one-time `novnc` URL from
// POST /v1/servers/{id}/remote-consoles, given to noVNC, which opens the WebSocket itself.

import RFB from './vendor/novnc/core/rfb.js';
import { call } from './api.js';

/** One VNC view, reused for whichever server is selected. */
export class VncConsole {
  /** `container` holds noVNC's canvas; `onState(text)` reports the session. */
  constructor(container, onState) {
    this.container = container;
    this.onState = onState;
    this.rfb = null;
  }

  /** Opens the display of server `id`. */
  async open(id) {
    this.close();
    this.onState('connecting…');
    let answer;
    try {
      answer = await call('POST', `/v1/servers/${encodeURIComponent(id)}/remote-consoles`, { type: 'novnc' });
    } catch (e) {
      this.onState(`not connected: ${e.message}`);
      return;
    }
    const rfb = new RFB(this.container, answer.url, { wsProtocols: ['binary'] });
    rfb.scaleViewport = true;
    rfb.resizeSession = false;
    rfb.addEventListener('connect', () => this.onState('connected'));
    rfb.addEventListener('disconnect', (e) => {
      if (this.rfb !== rfb) return;
      this.onState(e.detail.clean ? 'disconnected' : 'connection lost');
      this.rfb = null;
    });
    rfb.addEventListener('securityfailure', (e) => this.onState(`refused: ${e.detail.reason ?? e.detail.status}`));
    this.rfb = rfb;
  }

  /** Ends the session (if any). */
  close() {
    const { rfb } = this;
    this.rfb = null;
    if (rfb) rfb.disconnect();
    this.container.replaceChildren();
  }
}
