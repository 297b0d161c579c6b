// The operator dashboard: hosts, games and sessions, kept live from the event stream.
//
// Everything comes from this broker's own API, with the key the operator gives (kept in this
// tab's sessionStorage only). The event stream is read with fetch() rather than EventSource,
// which cannot send an Authorization header; a broken stream is resumed with Last-Event-ID,
// so no change is missed. Every value is put in the page as text, never as HTML.
"use strict";

const KEY = "arcade.apiKey";
const LIVE = new Set(["starting", "ready", "running", "stopping"]);
const STATUSES = ["starting", "ready", "running", "stopping", "ended", "failed", "lost"];
// The newest sessions of any status shown; every live one is loaded besides.
const RECENT_SESSIONS = 200;
// CPU and memory come with heartbeats, not events: the hosts are read again this often.
const HOSTS_EVERY_MS = 5000;

const state = {
  key: sessionStorage.getItem(KEY),
  hosts: new Map(),
  games: [],
  sessions: new Map(),
  lastEventId: null,
  streaming: null,
  pending: null,
  drawScheduled: false,
  connected: null,
  // Bumped by each start() and askForKey(): a load or a stream of an earlier one (a key
  // since replaced) must not touch the page.
  generation: 0,
};

// Tells start() the stream is subscribed (the broker answers once it is), or gave up trying.
function connected() {
  if (state.connected) {
    state.connected();
    state.connected = null;
  }
}

const $ = (id) => document.getElementById(id);

class ApiError extends Error {
  constructor(status, code, message) {
    super(message || `HTTP ${status}`);
    this.status = status;
    this.code = code;
  }
}

function headers() {
  return state.key ? { Authorization: `Bearer ${state.key}` } : {};
}

async function api(method, path) {
  const res = await fetch(path, { method, headers: headers(), cache: "no-store" });
  let body = null;
  try {
    body = await res.json();
  } catch (_) {
    body = null;
  }
  if (!res.ok) {
    const e = body && body.error ? body.error : {};
    throw new ApiError(res.status, e.code, e.message);
  }
  return body;
}

function showError(err) {
  if (err instanceof ApiError && err.status === 401) {
    return askForKey("That key was not accepted.");
  }
  $("error").textContent = err ? String(err.message || err) : "";
}

function askForKey(message) {
  state.generation += 1;
  stopStream();
  sessionStorage.removeItem(KEY);
  state.key = null;
  $("board").hidden = true;
  $("forget").hidden = true;
  $("login").hidden = false;
  $("login-error").textContent = message || "";
  $("key").focus();
}

// ---- the event stream -------------------------------------------------------------------

function stopStream() {
  if (state.streaming) {
    state.streaming.abort();
    state.streaming = null;
  }
  setLive(false);
}

function setLive(on) {
  $("live").textContent = on ? "live" : "reconnecting";
  $("live").classList.toggle("off", !on);
}

async function follow(gen) {
  const ctrl = new AbortController();
  state.streaming = ctrl;
  const current = () => gen === state.generation && !ctrl.signal.aborted;
  for (;;) {
    try {
      const h = headers();
      if (state.lastEventId !== null) {
        h["Last-Event-ID"] = String(state.lastEventId);
      }
      const res = await fetch("/v1/events", { headers: h, signal: ctrl.signal, cache: "no-store" });
      if (!current()) {
        return;
      }
      if (res.status === 401) {
        return askForKey(state.key ? "That key was not accepted." : "");
      }
      if (!res.ok || !res.body) {
        throw new Error(`event stream: HTTP ${res.status}`);
      }
      setLive(true);
      connected();
      await readEvents(res.body.getReader());
    } catch (err) {
      if (!current()) {
        return;
      }
    }
    setLive(false);
    await new Promise((r) => setTimeout(r, 1000));
    if (!current()) {
      return;
    }
  }
}

// Server-Sent Events, as the WHATWG spec frames them: lines, blank line ends an event.
async function readEvents(reader) {
  const decoder = new TextDecoder();
  let buffer = "";
  let event = { id: null, data: [] };
  for (;;) {
    const { value, done } = await reader.read();
    if (done) {
      return;
    }
    buffer += decoder.decode(value, { stream: true });
    let nl;
    while ((nl = buffer.search(/\r\n|\r|\n/)) >= 0) {
      const line = buffer.slice(0, nl);
      buffer = buffer.slice(nl + (buffer.startsWith("\r\n", nl) ? 2 : 1));
      if (line === "") {
        if (event.data.length > 0) {
          deliver(event.id, event.data.join("\n"));
        }
        event = { id: null, data: [] };
        continue;
      }
      if (line.startsWith(":")) {
        continue;
      }
      const colon = line.indexOf(":");
      const field = colon < 0 ? line : line.slice(0, colon);
      let val = colon < 0 ? "" : line.slice(colon + 1);
      if (val.startsWith(" ")) {
        val = val.slice(1);
      }
      if (field === "id") {
        event.id = val;
      } else if (field === "data") {
        event.data.push(val);
      }
    }
  }
}

function deliver(id, data) {
  let e;
  try {
    e = JSON.parse(data);
  } catch (_) {
    return;
  }
  state.lastEventId = id !== null ? Number(id) : e.id;
  if (state.pending) {
    state.pending.push(e);
  } else {
    apply(e);
    draw();
  }
}

function apply(e) {
  if (e.session) {
    state.sessions.set(e.session.session_id, e.session);
  }
  if (e.host) {
    state.hosts.set(e.host.host_id, e.host);
  }
  if (e.game) {
    // A game's line also counts its hosts: read the list again.
    loadGames(state.generation);
  }
}

async function loadGames(gen) {
  try {
    const list = await api("GET", "/v1/games");
    if (gen !== state.generation) {
      return;
    }
    state.games = list.games;
    $("games-note").hidden = true;
    draw();
  } catch (err) {
    if (gen === state.generation) {
      note("games-note", err);
    }
  }
}

// ---- loading ----------------------------------------------------------------------------

async function start() {
  stopStream();
  state.generation += 1;
  const gen = state.generation;
  $("login").hidden = true;
  $("board").hidden = false;
  $("forget").hidden = !state.key;
  showError(null);
  // Events that happen while the lists load are applied over them, in order.
  state.pending = [];
  state.lastEventId = null;
  // Subscribed before the lists are read, so no change falls between them.
  const subscribed = new Promise((resolve) => {
    state.connected = resolve;
    setTimeout(resolve, 5000);
  });
  follow(gen);
  await subscribed;
  if (gen !== state.generation) {
    return;
  }
  try {
    const pages = await Promise.all([
      api("GET", `/v1/sessions?limit=${RECENT_SESSIONS}`),
      ...[...LIVE].map((st) => api("GET", `/v1/sessions?status=${st}&limit=1000`)),
    ]);
    if (gen !== state.generation) {
      return;
    }
    state.sessions = new Map(pages.flatMap((p) => p.sessions).map((s) => [s.session_id, s]));
    $("sessions-note").hidden = true;
  } catch (err) {
    if (gen !== state.generation) {
      return;
    }
    if (err instanceof ApiError && err.status === 401) {
      return askForKey(state.key ? "That key was not accepted." : "");
    }
    note("sessions-note", err);
  }
  try {
    const list = await api("GET", "/v1/hosts");
    if (gen !== state.generation) {
      return;
    }
    state.hosts = new Map(list.hosts.map((h) => [h.host_id, h]));
    $("hosts-note").hidden = true;
  } catch (err) {
    if (gen !== state.generation) {
      return;
    }
    note("hosts-note", err);
  }
  await loadGames(gen);
  const pending = state.pending || [];
  state.pending = null;
  pending.forEach(apply);
  draw();
  refreshHosts(gen);
}

async function refreshHosts(gen) {
  for (;;) {
    await new Promise((r) => setTimeout(r, HOSTS_EVERY_MS));
    if (gen !== state.generation) {
      return;
    }
    try {
      const list = await api("GET", "/v1/hosts");
      if (gen !== state.generation) {
        return;
      }
      for (const h of list.hosts) {
        state.hosts.set(h.host_id, h);
      }
      await loadGames(gen);
      draw();
    } catch (_) {
      // Shown by the next action that fails, or the stream's state.
    }
  }
}

// Sessions not over on each host, as this page knows them (live from the stream).
function liveByHost() {
  const n = new Map();
  for (const s of state.sessions.values()) {
    if (LIVE.has(s.status)) {
      n.set(s.host_id, (n.get(s.host_id) || 0) + 1);
    }
  }
  return n;
}

function note(id, err) {
  $(id).hidden = false;
  $(id).textContent =
    err instanceof ApiError && err.status === 403
      ? "Your key's role may not see this."
      : String(err.message || err);
}

// ---- drawing ----------------------------------------------------------------------------

function draw() {
  if (state.drawScheduled) {
    return;
  }
  state.drawScheduled = true;
  requestAnimationFrame(() => {
    state.drawScheduled = false;
    drawHosts();
    drawGames();
    drawFilters();
    drawSessions();
  });
}

function cell(row, text, cls) {
  const td = document.createElement("td");
  td.textContent = text === null || text === undefined ? "" : String(text);
  if (cls) {
    td.className = cls;
  }
  row.appendChild(td);
  return td;
}

function button(td, label, cls, action) {
  const b = document.createElement("button");
  b.type = "button";
  b.textContent = label;
  b.className = cls;
  b.addEventListener("click", async () => {
    b.disabled = true;
    try {
      await action();
      showError(null);
    } catch (err) {
      showError(err);
    } finally {
      b.disabled = false;
    }
  });
  td.appendChild(b);
}

const gib = (bytes) => (bytes / 2 ** 30).toFixed(1);

function drawHosts() {
  const body = $("hosts").tBodies[0];
  body.replaceChildren();
  const hosts = [...state.hosts.values()].sort((a, b) => a.host_id.localeCompare(b.host_id));
  const live = liveByHost();
  for (const h of hosts) {
    const tr = document.createElement("tr");
    tr.dataset.host = h.host_id;
    cell(tr, h.host_id);
    cell(tr, h.status, `status ${h.status}`);
    cell(tr, `${live.get(h.host_id) || 0}/${h.max_sessions}`, "num sessions");
    const gpus = h.gpus || [];
    cell(tr, gpus.length ? `${h.gpus_used || 0}/${gpus.length}` : "-", "num gpus");
    cell(tr, `${Math.round(h.cpu_percent)}%`, "num");
    cell(tr, `${gib(h.mem_used_bytes)}/${gib(h.mem_total_bytes)} GiB`, "num");
    const labels = Object.entries(h.labels || {}).map(([k, v]) => `${k}=${v}`);
    cell(tr, labels.join(" "), "labels");
    cell(tr, h.broker_id || "");
    const actions = cell(tr, "");
    const id = encodeURIComponent(h.host_id);
    if (h.status === "draining") {
      button(actions, "Resume", "resume", async () => {
        const host = await api("POST", `/v1/hosts/${id}/resume`);
        state.hosts.set(host.host_id, host);
        draw();
      });
    } else {
      button(actions, "Drain", "drain", async () => {
        const host = await api("POST", `/v1/hosts/${id}/drain`);
        state.hosts.set(host.host_id, host);
        draw();
      });
    }
    body.appendChild(tr);
  }
}

// A rollout as one line: where it is, how many hosts run the new build, and why it stopped.
function rollout(r) {
  if (!r) {
    return "";
  }
  let text = `${r.state} ${r.hosts_ready}/${r.hosts_total}`;
  if (r.failures) {
    text += `, ${r.failures} failed`;
  }
  if (r.last_error) {
    text += `: ${r.last_error}`;
  }
  return text;
}

function drawGames() {
  const body = $("games").tBodies[0];
  body.replaceChildren();
  for (const g of state.games) {
    const tr = document.createElement("tr");
    tr.dataset.game = g.game_id;
    cell(tr, g.game_id);
    cell(tr, g.source || "host", "source");
    cell(tr, g.build ? g.build.slice(0, 12) : "", "build");
    cell(tr, rollout(g.rollout), g.rollout ? `rollout ${g.rollout.state}` : "rollout");
    cell(tr, g.hosts, "num hosts");
    body.appendChild(tr);
  }
}

function options(select, values, first) {
  const chosen = select.value;
  const have = [...select.options].slice(first).map((o) => o.value);
  if (have.join("\n") === values.join("\n")) {
    return;
  }
  while (select.options.length > first) {
    select.remove(first);
  }
  for (const v of values) {
    const o = document.createElement("option");
    o.value = v;
    o.textContent = v;
    select.appendChild(o);
  }
  select.value = values.includes(chosen) || chosen === "" || chosen === "*" ? chosen : "";
}

function drawFilters() {
  const sessions = [...state.sessions.values()];
  options($("f-status"), STATUSES, 2);
  options($("f-game"), [...new Set(sessions.map((s) => s.game_id))].sort(), 1);
  const hosts = new Set([...state.hosts.keys(), ...sessions.map((s) => s.host_id)]);
  options($("f-host"), [...hosts].sort(), 1);
}

function shown(s) {
  const status = $("f-status").value;
  if (status === "" && !LIVE.has(s.status)) {
    return false;
  }
  if (status !== "" && status !== "*" && s.status !== status) {
    return false;
  }
  const game = $("f-game").value;
  const host = $("f-host").value;
  return (game === "" || s.game_id === game) && (host === "" || s.host_id === host);
}

function drawSessions() {
  const body = $("sessions").tBodies[0];
  body.replaceChildren();
  const sessions = [...state.sessions.values()]
    .filter(shown)
    .sort((a, b) => b.created_at.localeCompare(a.created_at));
  for (const s of sessions) {
    const tr = document.createElement("tr");
    tr.dataset.session = s.session_id;
    cell(tr, s.session_id);
    cell(tr, s.mode && s.mode !== "default" ? `${s.game_id} (${s.mode})` : s.game_id);
    cell(tr, s.status, `status ${s.status}`);
    cell(tr, s.host_id);
    cell(tr, s.ip && s.port ? `${s.ip}:${s.port}` : "");
    cell(tr, s.pid, "num");
    cell(tr, s.started_at ? new Date(s.started_at).toLocaleString() : "");
    const actions = cell(tr, "");
    if (LIVE.has(s.status)) {
      button(actions, "End", "end", async () => {
        const ended = await api("DELETE", `/v1/sessions/${encodeURIComponent(s.session_id)}`);
        state.sessions.set(ended.session_id, ended);
        draw();
      });
    }
    body.appendChild(tr);
  }
}

// ---- wiring -----------------------------------------------------------------------------

document.addEventListener("DOMContentLoaded", () => {
  $("login").addEventListener("submit", (ev) => {
    ev.preventDefault();
    state.key = $("key").value.trim();
    sessionStorage.setItem(KEY, state.key);
    $("key").value = "";
    start();
  });
  $("forget").addEventListener("click", () => askForKey(""));
  for (const id of ["f-status", "f-game", "f-host"]) {
    $(id).addEventListener("change", draw);
  }
  start();
});
