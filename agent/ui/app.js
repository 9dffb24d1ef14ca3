// The node page: sign in with the admin token, then the node's capacity, servers (status live
// from /v1/events), networks, volumes and plugins; per server its console log, serial console,
// VNC view and start/stop/reboot. Everything is built with DOM calls and textContent: nothing
// the API returns is ever parsed as HTML.

import { ApiError, call, clearToken, followEvents, setToken, token } from './api.js';
import { SerialConsole } from './serial.js';
import { VncConsole } from './vnc.js';

// The page's Content-Security-Policy admits <style> elements only with this load's nonce;
// xterm.js creates its own, so every <style> element made on this page gets it.
const styleNonce = document.querySelector('link[rel="stylesheet"][nonce]')?.nonce ?? '';
const createElement = Document.prototype.createElement;
Document.prototype.createElement = function createElementWithNonce(name, options) {
  const element = createElement.call(this, name, options);
  if (String(name).toLowerCase() === 'style') element.nonce = styleNonce;
  return element;
};

const $ = (id) => document.getElementById(id);

/** Makes an element with attributes (`class`, `data-*`, …) and text or element children. */
function el(tag, attributes = {}, ...children) {
  const element = document.createElement(tag);
  for (const [name, value] of Object.entries(attributes)) {
    if (value === undefined || value === null || value === false) continue;
    element.setAttribute(name, value === true ? '' : String(value));
  }
  for (const child of children) {
    element.append(child instanceof Node ? child : document.createTextNode(String(child ?? '')));
  }
  return element;
}

/** The servers shown, by id. */
const servers = new Map();
/** The server whose details are open, or null. */
let selected = null;
/** Stops the event stream on sign-out. */
let events = null;
/** Counts sign-ins and sign-outs: answers of an earlier one are dropped. */
let signedInAs = 0;
/** A pending refresh timer, whether a refresh runs, and whether another one is wanted. */
let refreshTimer = null;
let refreshing = false;
let refreshAgain = false;

/** Shows a console's state in `element`: its text, and its state in `data-state`. */
function showConsoleState(element, state, text) {
  element.textContent = text;
  element.dataset.state = state;
}

const serial = new SerialConsole($('terminal'), (state, text, heldElsewhere) => {
  showConsoleState($('serial-status'), state, text);
  $('serial-take-over').hidden = !heldElsewhere;
});
const vnc = new VncConsole($('vnc-screen'), (state, text) => {
  showConsoleState($('vnc-status'), state, text);
});

// ---- signing in and out ----

$('login-form').addEventListener('submit', async (e) => {
  e.preventDefault();
  const value = $('token').value.trim();
  $('login-error').textContent = '';
  if (!value) return;
  setToken(value);
  try {
    await call('GET', '/v1/host');
  } catch (err) {
    clearToken();
    $('login-error').textContent = err.status === 401
      ? 'That is not the admin token of this node.'
      : err.message;
    return;
  }
  $('token').value = '';
  start();
});

$('sign-out').addEventListener('click', () => signOut(''));

function signOut(why) {
  clearToken();
  signedInAs += 1;
  events?.abort();
  events = null;
  clearTimeout(refreshTimer);
  refreshTimer = null;
  refreshAgain = false;
  closeDetail();
  // Nothing of the node stays on the page for whoever uses this browser next.
  servers.clear();
  $('host-facts').replaceChildren();
  for (const id of ['capacity', 'servers', 'networks', 'volumes', 'plugins']) {
    $(id).tBodies[0].replaceChildren();
  }
  $('dashboard-error').textContent = '';
  $('dashboard').hidden = true;
  $('sign-out').hidden = true;
  $('login').hidden = false;
  $('login-error').textContent = why;
  $('node-name').textContent = '';
  setLive(false, 'signed out');
}

function start() {
  signedInAs += 1;
  $('login').hidden = true;
  $('dashboard').hidden = false;
  $('sign-out').hidden = false;
  events = new AbortController();
  followEvents(onEvent, onStreamState, events.signal);
  refresh();
}

/** Reports an error of a call; a refused token signs out. */
function report(err) {
  if (err instanceof ApiError && err.status === 401) {
    signOut('The agent no longer accepts this token; sign in again.');
    return;
  }
  $('dashboard-error').textContent = err.message;
}

// ---- live updates ----

function setLive(connected, why) {
  const badge = $('live');
  badge.textContent = connected ? 'live' : 'offline';
  badge.title = connected ? 'Following /v1/events' : `Not following /v1/events: ${why}`;
  badge.classList.toggle('off', !connected);
}

function onStreamState(connected, why) {
  if (why === 'unauthorized') {
    signOut('The agent no longer accepts this token; sign in again.');
    return;
  }
  setLive(connected, why);
  // Whatever changed while the stream was down is read again.
  if (connected) scheduleRefresh(0);
}

function onEvent(kind, event) {
  if (kind === 'gap') {
    // Events were lost: read everything again now.
    scheduleRefresh(0);
    return;
  }
  if (kind === 'server.status' && servers.has(event.resource_id)) {
    const server = servers.get(event.resource_id);
    server.status = event.data.status;
    server.task_state = event.data.task_state;
    server.fault = event.data.fault;
    renderServerRow(server);
    if (selected === server.id) renderDetailStatus();
  }
  scheduleRefresh(1000);
}

/** Reads everything again after `delay` ms, once however many events come meanwhile. */
function scheduleRefresh(delay) {
  if (refreshTimer !== null) return;
  refreshTimer = setTimeout(() => {
    refreshTimer = null;
    refresh();
  }, delay);
}

// ---- reading and rendering ----

/** Reads and shows everything; one read at a time (a request meanwhile runs once after it). */
async function refresh() {
  if (token() === null) return;
  if (refreshing) {
    refreshAgain = true;
    return;
  }
  refreshing = true;
  const session = signedInAs;
  try {
    await readAll(session);
  } finally {
    refreshing = false;
  }
  if (refreshAgain && session === signedInAs) {
    refreshAgain = false;
    scheduleRefresh(0);
  }
}

async function readAll(session) {
  try {
    const [host, serverList, networks, volumes, plugins] = await Promise.all([
      call('GET', '/v1/host'),
      call('GET', '/v1/servers'),
      call('GET', '/v1/networks'),
      call('GET', '/v1/volumes'),
      call('GET', '/v1/plugins'),
    ]);
    if (session !== signedInAs) return;
    $('dashboard-error').textContent = '';
    renderServers(serverList.servers);
    renderHost(host, serverList.servers);
    renderNetworks(networks.networks);
    renderVolumes(volumes.volumes);
    renderPlugins(plugins.plugins);
  } catch (err) {
    if (session === signedInAs) report(err);
  }
}

const GIB = 1024;

function renderHost(host, serverList) {
  $('node-name').textContent = host.hostname;
  const hv = host.hypervisor;
  const facts = [
    ['Host', host.hostname],
    ['Availability zone', host.availability_zone],
    ['Agent', `${host.agent_version}, up ${formatDuration(host.uptime_seconds)}`],
    ['Hypervisor', `${hv.domain_type} (${hv.accelerator})${hv.reachable ? '' : ` — unreachable: ${hv.error ?? ''}`}`],
    ['Takes new servers', host.service_status.enabled ? 'yes' : `no (${host.service_status.disabled_reason ?? 'disabled'})`],
    ['Fleet', host.fleet.state + (host.fleet.node_name ? ` as ${host.fleet.node_name}` : '')],
  ];
  $('host-facts').replaceChildren(...facts.flatMap(([k, v]) => [el('dt', {}, k), el('dd', {}, v)]));

  const used = { vcpus: 0, ram: 0, disk: 0 };
  for (const s of serverList) {
    if (s.status === 'DELETED') continue;
    used.vcpus += s.flavor.vcpus;
    used.ram += s.flavor.ram_mb;
    used.disk += s.flavor.disk_gb + (s.flavor.ephemeral_gb ?? 0);
  }
  const c = host.capacity;
  const rows = [
    ['vCPUs', used.vcpus, c.vcpus_limit, c.vcpus, (n) => `${n}`],
    ['Memory', used.ram, c.memory_limit_mb, c.memory_mb, (n) => formatMiB(n)],
    ['Disk', used.disk, c.disk_limit_gb, c.disk_gb, (n) => `${n} GiB`],
  ];
  $('capacity').tBodies[0].replaceChildren(...rows.map(([name, u, limit, physical, fmt]) => {
    const share = limit > 0 ? Math.min(100, Math.round((100 * u) / limit)) : 0;
    const meter = el('meter', { min: 0, max: 100, value: share, high: 90 });
    return el('tr', { 'data-resource': name }, el('th', {}, name), el('td', {}, fmt(u)),
      el('td', {}, fmt(limit)), el('td', {}, fmt(physical)), el('td', {}, meter, ` ${share}%`));
  }));
  const free = el('tr', {}, el('th', {}, 'Memory free now'), el('td', { colspan: 4 }, formatMiB(c.memory_available_mb)));
  $('capacity').tBodies[0].append(free);
}

function renderServers(list) {
  const seen = new Set();
  const body = $('servers').tBodies[0];
  const rows = [];
  for (const server of list) {
    seen.add(server.id);
    servers.set(server.id, server);
    rows.push(serverRow(server));
  }
  for (const id of [...servers.keys()]) {
    if (!seen.has(id)) servers.delete(id);
  }
  if (rows.length === 0) rows.push(el('tr', {}, el('td', { colspan: 7, class: 'empty' }, 'No servers.')));
  body.replaceChildren(...rows);
  if (selected !== null && !servers.has(selected)) closeDetail();
  else if (selected !== null) renderDetailStatus();
}

function serverRow(server) {
  const f = server.flavor;
  const addresses = server.nics.flatMap((n) => n.fixed_ips ?? []).join(', ');
  const actions = el('td', { class: 'actions' },
    actionButton(server, 'start', 'Start'),
    actionButton(server, 'stop', 'Stop'),
    actionButton(server, 'reboot', 'Reboot'),
    actionButton(server, 'hard-reboot', 'Hard reboot'),
    el('button', { type: 'button', 'data-open': 'log' }, 'Log'),
    el('button', { type: 'button', 'data-open': 'serial' }, 'Console'),
    el('button', { type: 'button', 'data-open': 'vnc' }, 'VNC'));
  for (const button of actions.querySelectorAll('button[data-open]')) {
    button.addEventListener('click', () => openDetail(server.id, button.dataset.open));
  }
  return el('tr', { 'data-server-id': server.id },
    el('td', { class: 'name' }, server.name),
    el('td', { class: 'status' }, statusBadge(server.status)),
    el('td', { class: 'task' }, server.task_state ?? (server.fault ? `fault: ${server.fault}` : '')),
    el('td', {}, `${f.vcpus} vCPU, ${formatMiB(f.ram_mb)}, ${f.disk_gb} GiB`),
    el('td', {}, addresses),
    el('td', { class: 'id' }, server.id),
    actions);
}

/** Each button's action body and the statuses the agent allows it in (ops/servers/actions.rs). */
const ACTIONS = {
  start: { body: { start: null }, allowed: ['SHUTOFF'] },
  stop: { body: { stop: null }, allowed: ['ACTIVE', 'PAUSED', 'ERROR'] },
  reboot: { body: { reboot: { type: 'SOFT' } }, allowed: ['ACTIVE'] },
  'hard-reboot': { body: { reboot: { type: 'HARD' } }, allowed: ['ACTIVE', 'SHUTOFF', 'PAUSED', 'ERROR'] },
};

function actionButton(server, action, label) {
  const { body, allowed } = ACTIONS[action];
  const enabled = allowed.includes(server.status) && !server.task_state;
  const button = el('button', { type: 'button', 'data-action': action, disabled: !enabled }, label);
  button.addEventListener('click', async () => {
    button.disabled = true;
    try {
      await call('POST', `/v1/servers/${encodeURIComponent(server.id)}/action`, body);
      $('dashboard-error').textContent = '';
    } catch (err) {
      report(err);
    }
    scheduleRefresh(300);
  });
  return button;
}

function renderServerRow(server) {
  const old = document.querySelector(`tr[data-server-id="${CSS.escape(server.id)}"]`);
  if (old) old.replaceWith(serverRow(server));
}

function statusBadge(status) {
  return el('span', { class: `status status-${String(status).toLowerCase()}` }, status);
}

function renderNetworks(list) {
  fillTable('networks', list, 7, 'No networks.', (n) => [
    n.name, statusBadge(n.status), n.network_type,
    n.segmentation_id ?? n.physical_network ?? '', n.bridge ?? '', n.mtu, n.backend,
  ]);
}

function renderVolumes(list) {
  fillTable('volumes', list, 6, 'No volumes.', (v) => [
    v.name, statusBadge(v.status), `${v.size_gb} GiB`, v.volume_type, v.backend,
    v.attached_to ? `${servers.get(v.attached_to)?.name ?? v.attached_to} (${v.device ?? ''})` : '',
  ]);
}

function renderPlugins(list) {
  fillTable('plugins', list, 8, 'No plugins configured.', (p) => [
    p.name, p.kind, statusBadge(p.status), p.version ?? '', p.calls, p.failures,
    (p.grants ?? []).join(', '), p.error ?? '',
  ]);
}

function fillTable(id, list, columns, emptyText, cells) {
  const rows = list.map((item) => el('tr', { 'data-id': item.id ?? item.name },
    ...cells(item).map((c) => el('td', {}, c))));
  if (rows.length === 0) rows.push(el('tr', {}, el('td', { colspan: columns, class: 'empty' }, emptyText)));
  $(id).tBodies[0].replaceChildren(...rows);
}

// ---- one server's details ----

function openDetail(id, tab) {
  if (selected !== id) {
    serial.close();
    vnc.close();
    showConsoleState($('serial-status'), 'closed', '');
    showConsoleState($('vnc-status'), 'closed', '');
  }
  selected = id;
  $('server-detail').hidden = false;
  $('detail-name').textContent = servers.get(id)?.name ?? id;
  renderDetailStatus();
  showTab(tab);
  $('server-detail').scrollIntoView({ block: 'start' });
}

function renderDetailStatus() {
  const server = servers.get(selected);
  $('detail-status').replaceChildren(server ? statusBadge(server.status) : '');
}

function closeDetail() {
  serial.close();
  vnc.close();
  selected = null;
  $('server-detail').hidden = true;
}

function showTab(tab) {
  for (const name of ['log', 'serial', 'vnc']) {
    $(`tab-${name}`).hidden = name !== tab;
    document.querySelector(`#detail-tabs [data-tab="${name}"]`).classList.toggle('current', name === tab);
  }
  if (tab === 'log') loadLog();
  if (tab === 'serial' && !serial.active) serial.open(selected);
  if (tab === 'vnc' && !vnc.active) vnc.open(selected);
}

async function loadLog() {
  const id = selected;
  try {
    const answer = await call('POST', `/v1/servers/${encodeURIComponent(id)}/action`,
      { console_output: { length: 200 } });
    if (selected === id) $('console-log').textContent = answer.output;
  } catch (err) {
    if (selected === id) $('console-log').textContent = `(${err.message})`;
  }
}

for (const button of document.querySelectorAll('#detail-tabs [data-tab]')) {
  button.addEventListener('click', () => showTab(button.dataset.tab));
}
$('detail-close').addEventListener('click', closeDetail);
$('log-refresh').addEventListener('click', loadLog);
$('serial-connect').addEventListener('click', () => serial.open(selected));
$('serial-watch').addEventListener('click', () => serial.open(selected, { readOnly: true }));
$('serial-take-over').addEventListener('click', () => serial.open(selected, { force: true }));
$('serial-disconnect').addEventListener('click', () => {
  serial.close();
  showConsoleState($('serial-status'), 'closed', 'disconnected');
});
$('vnc-connect').addEventListener('click', () => vnc.open(selected));
$('vnc-disconnect').addEventListener('click', () => {
  vnc.close();
  showConsoleState($('vnc-status'), 'closed', 'disconnected');
});

// ---- formatting ----

function formatMiB(mib) {
  return mib >= GIB ? `${(mib / GIB).toFixed(mib % GIB === 0 ? 0 : 1)} GiB` : `${mib} MiB`;
}

function formatDuration(seconds) {
  const d = Math.floor(seconds / 86400);
  const h = Math.floor((seconds % 86400) / 3600);
  const m = Math.floor((seconds % 3600) / 60);
  return d > 0 ? `${d} d ${h} h` : h > 0 ? `${h} h ${m} min` : `${m} min`;
}

// A tab that signed in before keeps its token until it is closed.
if (token() !== null) start();
