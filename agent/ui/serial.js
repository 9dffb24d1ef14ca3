// The interactive serial console of one server: a one-time URL from
// POST /v1/servers/{id}/remote-consoles, a binary WebSocket, and xterm.js to show and type.

import { Terminal } from './vendor/xterm/xterm.mjs';
import { ConsoleUrls } from './console-url.js';

const encoder = new TextEncoder();

/** One serial console view, reused for whichever server is selected. */
export class SerialConsole {
  /**
   * `container` holds the terminal; `onState(state, text, heldElsewhere)` reports the session
   * (`state`: connecting, connected, watching, failed or closed).
   */
  constructor(container, onState) {
    this.container = container;
    this.onState = onState;
    this.terminal = null;
    this.socket = null;
    this.urls = new ConsoleUrls();
  }

  /** Opens a session on server `id`: interactive, read-only, or taking over another one. */
  async open(id, { readOnly = false, force = false } = {}) {
    this.close();
    const body = { type: 'serial' };
    if (readOnly) body.read_only = true;
    if (force) body.force = true;
    this.onState('connecting', 'connecting…', false);
    let answer;
    try {
      answer = await this.urls.request(id, body);
    } catch (e) {
      this.onState('failed', `not connected: ${e.message}`, e.code === 'console_in_use');
      return;
    }
    if (answer === null) return;
    const terminal = new Terminal({
      cursorBlink: !readOnly,
      disableStdin: readOnly,
      scrollback: 5000,
      fontFamily: 'ui-monospace, monospace',
      fontSize: 14,
      // Guest output is untrusted: links a guest prints (OSC 8) are never opened.
      linkHandler: { activate() {}, allowNonHttpProtocols: false },
    });
    terminal.open(this.container);
    const socket = new WebSocket(answer.url, []);
    socket.binaryType = 'arraybuffer';
    socket.addEventListener('open', () => {
      if (readOnly) this.onState('watching', 'watching (read-only)', false);
      else this.onState('connected', 'connected', false);
      terminal.focus();
    });
    socket.addEventListener('message', (e) => {
      terminal.write(typeof e.data === 'string' ? e.data : new Uint8Array(e.data));
    });
    socket.addEventListener('close', (e) => {
      if (this.socket !== socket) return;
      const why = e.reason || (e.code === 1006 ? 'connection lost' : 'closed');
      this.onState('closed', `closed: ${why} (${e.code})`, e.code === 4001);
    });
    if (!readOnly) {
      terminal.onData((data) => {
        if (socket.readyState === WebSocket.OPEN) socket.send(encoder.encode(data));
      });
    }
    this.terminal = terminal;
    this.socket = socket;
  }

  /** Whether a session is open or being opened. */
  get active() {
    return this.urls.pending || this.socket !== null;
  }

  /** Ends the session (if any) and removes the terminal. */
  close() {
    this.urls.cancel();
    const { socket, terminal } = this;
    this.socket = null;
    this.terminal = null;
    if (socket && socket.readyState <= WebSocket.OPEN) socket.close(1000, 'closed by the page');
    if (terminal) terminal.dispose();
    this.container.replaceChildren();
  }
}
