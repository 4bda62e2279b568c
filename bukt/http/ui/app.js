// The Bukt dashboard. Plain DOM, no framework: a hash router over four pages, polling
// the public HTTP API (docs/http.md) with the token kept in sessionStorage.
import {human, lineChart, sparkline} from "./chart.js";

const API = "/api/v1";
const POLL_MS = 1000;           // how often the open page asks for new figures
const HISTORY_S = 300;          // the charts show the last five minutes
const KEYS_PAGE = 50;           // keys per page of the key browser
const TAIL_MAX = 200;           // events kept in the live tail
const STORE_KEY = "bukt.session";

const $ = sel => document.querySelector(sel);

// h("tr", {class: "x"}, child, "text", ...): an element, never innerHTML (keys and
// values are user data).
function h(tag, attrs, ...children) {
  const e = document.createElement(tag);
  for (const [k, v] of Object.entries(attrs || {})) {
    if (v === false || v === null || v === undefined) continue;
    if (k.startsWith("on")) e.addEventListener(k.slice(2), v);
    else if (k === "text") e.textContent = v;
    else e.setAttribute(k, v === true ? "" : v);
  }
  for (const c of children.flat()) {
    if (c === null || c === undefined || c === false) continue;
    e.append(c instanceof Node ? c : String(c));
  }
  return e;
}

// -- the session -------------------------------------------------------------------------
let session = JSON.parse(sessionStorage.getItem(STORE_KEY) || "null");

function notice(text, kind = "error") {
  const n = $("#notice");
  n.textContent = text;
  n.className = kind;
  n.hidden = !text;
}

class ApiError extends Error {
  constructor(status, problem) {
    super(problem?.detail || problem?.title || `HTTP ${status}`);
    this.status = status;
    this.code = problem?.code;
  }
}

async function api(method, path, {body, headers = {}, raw = false, token} = {}) {
  const h2 = {"X-Auth-Token": token || session?.token, ...headers};
  let payload = body;
  if (body !== undefined && !(typeof body === "string") && !(body instanceof Uint8Array)) {
    payload = JSON.stringify(body);
    h2["Content-Type"] = "application/json";
  }
  const r = await fetch(path, {method, headers: h2, body: payload, cache: "no-store"});
  if (!r.ok && r.status !== 304) {
    let problem = null;
    try { problem = await r.json(); } catch (e) { /* not JSON */ }
    if (r.status === 401 && !token && session) endSession();
    throw new ApiError(r.status, problem);
  }
  if (raw) return r;
  if (r.status === 204) return null;
  return r.json();
}

function endSession() {
  // The token stopped working mid-session: revoked, its bucket dropped, or the
  // admin token changed. Say so, rather than showing empty pages.
  sessionStorage.removeItem(STORE_KEY);
  session = null;
  stopPolling();
  stopTail();
  notice("Your session has expired: the server no longer accepts this token (it was " +
         "revoked, its bucket dropped, or the admin token changed). Sign in again.");
  location.hash = "#/signin";
  route();
}

async function signIn(token, bucket) {
  // The admin token may list buckets; a bucket token may read its own bucket.
  try {
    if (bucket) {
      await api("GET", `${API}/buckets/${encodeURIComponent(bucket)}`, {token});
      return {token, bucket, admin: false};
    }
    await api("GET", `${API}/buckets`, {token});
    return {token, bucket: null, admin: true};
  } catch (e) {
    if (e.status === 401) throw new Error("Wrong token: the server does not know it.");
    if (e.status === 403 && !bucket)
      throw new Error("This is a bucket's token: give the bucket's name too.");
    if (e.status === 403)
      throw new Error(`This token may not read bucket "${bucket}".`);
    if (e.status === 404) throw new Error(`No bucket named "${bucket}".`);
    if (e.status === 429) throw new Error(`Too many wrong tokens from here: ${e.message}`);
    throw e;
  }
}

// -- polling and history ------------------------------------------------------------------
let timer = null;
const history = {};             // name -> [[t, v], ...]
let last = null;                // the previous /metrics snapshot, for rates

function record(name, t, v) {
  const s = history[name] || (history[name] = []);
  s.push([t, v]);
  while (s.length && s[0][0] < t - HISTORY_S) s.shift();
}

function rate(name, t, total) {
  // per-second rate of a counter, from the previous sample of the same name
  const prev = last?.[name];
  last = last || {};
  last[name] = [t, total];
  if (!prev || t <= prev[0]) return null;
  return Math.max(0, (total - prev[1]) / (t - prev[0]));
}

function absorb(buckets, t, store) {
  // one sample of every bucket's stats (and of the store's, for an admin)
  let ops = 0, hits = 0, misses = 0, mem = 0;
  for (const [name, s] of Object.entries(buckets)) {
    const r = rate(`ops:${name}`, t, (s.reads || 0) + (s.writes || 0));
    const hr = rate(`hits:${name}`, t, s.hits || 0);
    const mr = rate(`misses:${name}`, t, s.misses || 0);
    if (r !== null) { record(`ops:${name}`, t, r); ops += r; }
    if (hr !== null) { record(`hits:${name}`, t, hr); hits += hr; }
    if (mr !== null) { record(`misses:${name}`, t, mr); misses += mr; }
    record(`memory:${name}`, t, s.memory || s.bytes || 0);
    mem += s.memory || s.bytes || 0;
  }
  if (store) {
    const r = rate("ops", t, Object.values(buckets)
      .reduce((n, s) => n + (s.reads || 0) + (s.writes || 0), 0));
    if (r !== null) { record("ops", t, r); record("hits", t, hits); record("misses", t, misses); }
    record("memory", t, store.memory_used);
    record("ring", t, store.ring_depth);
  }
}

function startPolling(fn) {
  stopPolling();
  const tick = async () => {
    try {
      await fn();
    } catch (e) {
      if (session) notice(`Could not refresh: ${e.message}`);
    }
    if (session) timer = setTimeout(tick, POLL_MS);
  };
  tick();
}

function stopPolling() {
  if (timer) clearTimeout(timer);
  timer = null;
}

async function sampleAll() {
  const t = Date.now() / 1000;
  if (session.admin) {
    const m = await api("GET", "/metrics?format=json");
    absorb(m.buckets, t, m.store);
    return m;
  }
  const b = await api("GET", `${API}/buckets/${encodeURIComponent(session.bucket)}`);
  absorb({[session.bucket]: b.stats}, t, null);
  return {buckets: {[session.bucket]: b.stats}};
}

function charts(names) {
  // the live charts: store-wide for an admin, one bucket's otherwise
  const [ops, hits, misses, mem] = names;
  const list = [
    lineChart("Operations per second", [{name: "ops/s", points: history[ops] || []}],
              {span: HISTORY_S}),
    lineChart("Hits and misses per second", [{name: "hits/s", points: history[hits] || []},
                                             {name: "misses/s", points: history[misses] || []}],
              {span: HISTORY_S}),
    lineChart("Memory", [{name: "memory", points: history[mem] || []}],
              {unit: "B", span: HISTORY_S}),
  ];
  if (names[4]) list.push(lineChart("Ring depth", [{name: "ring", points: history.ring || []}],
                                    {unit: "B", span: HISTORY_S}));
  return h("div", {class: "charts", id: "charts"}, list);
}

// -- the pages -----------------------------------------------------------------------------
function page(title, ...children) {
  const p = $("#page");
  p.replaceChildren(h("h2", {id: "page-title", tabindex: "-1", text: title}), ...children);
  return p;
}

function statsTable(buckets) {
  const rows = Object.entries(buckets).map(([name, s]) => {
    const looked = (s.hits || 0) + (s.misses || 0);
    return h("tr", {},
      h("th", {scope: "row"}, h("a", {href: `#/bucket/${encodeURIComponent(name)}`, text: name})),
      h("td", {class: "num", text: human(s.keys || 0)}),
      h("td", {class: "num", text: human(s.memory || s.bytes || 0, "B")}),
      h("td", {class: "num", text: looked ? (100 * s.hits / looked).toFixed(1) + "%" : "-"}),
      h("td", {class: "num", text: human(s.evictions || 0)}),
      h("td", {class: "num", text: human(s.expirations || 0)}),
      h("td", {}, sparkline(history[`ops:${name}`] || [], `${name} ops/s`)));
  });
  return h("div", {class: "scroll"}, h("table", {id: "bucket-table"},
    h("caption", {text: "Buckets"}),
    h("thead", {}, h("tr", {}, ["bucket", "keys", "memory", "hit rate", "evictions",
                                "expirations", "ops/s"].map(c => h("th", {scope: "col", text: c})))),
    h("tbody", {}, rows.length ? rows : h("tr", {}, h("td", {colspan: 7, text: "No buckets yet."})))));
}

function bucketsPage() {
  const tableBox = h("div", {id: "buckets-box"});
  const chartBox = h("div", {id: "chart-box"});
  const created = h("div", {id: "created", "aria-live": "polite"});
  const form = session.admin ? h("form", {id: "create-bucket", class: "inline",
                                          onsubmit: createBucket},
    h("h3", {text: "Create a bucket"}),
    h("label", {for: "nb-name", text: "Name"}),
    h("input", {id: "nb-name", name: "name", required: true, pattern: "[A-Za-z0-9._\\-]{1,64}"}),
    h("label", {for: "nb-ttl", text: "Default TTL (s)"}),
    h("input", {id: "nb-ttl", name: "ttl", type: "number", min: "0", step: "any"}),
    h("label", {for: "nb-eviction", text: "Eviction"}),
    h("select", {id: "nb-eviction", name: "eviction"}, h("option", {text: "lru"}),
      h("option", {text: "none"})),
    h("label", {class: "check"}, h("input", {type: "checkbox", name: "persist", checked: true}),
      "Persist to disk"),
    h("button", {type: "submit", text: "Create"})) : null;
  page(session.admin ? "Buckets" : `Bucket ${session.bucket}`, tableBox, form, created,
       h("h3", {text: "Live"}), chartBox);

  async function createBucket(ev) {
    ev.preventDefault();
    const f = new FormData(ev.target);
    const body = {name: f.get("name"), eviction: f.get("eviction"),
                  persist: f.get("persist") === "on"};
    if (f.get("ttl")) body.default_ttl = Number(f.get("ttl"));
    try {
      const r = await api("POST", `${API}/buckets`, {body});
      created.replaceChildren(h("p", {class: "ok"}, `Bucket ${r.name} created. Its token, shown once: `,
                                  h("code", {id: "new-bucket-token", text: r.token})));
      ev.target.reset();
      notice("");
    } catch (e) {
      notice(`Could not create the bucket: ${e.message}`);
    }
  }
  startPolling(async () => {
    const m = await sampleAll();
    tableBox.replaceChildren(statsTable(m.buckets));
    chartBox.replaceChildren(session.admin
      ? charts(["ops", "hits", "misses", "memory", "ring"])
      : charts([`ops:${session.bucket}`, `hits:${session.bucket}`, `misses:${session.bucket}`,
                `memory:${session.bucket}`]));
  });
}

// key bytes <-> the API's strings: keys are shown as UTF-8 text when they are
function keyPath(name, key) {
  return `${API}/buckets/${encodeURIComponent(name)}/keys/` +
    key.split("/").map(encodeURIComponent).join("/");
}

function showValue(bytes, format) {
  if (format === "hex") {
    return Array.from(bytes, b => b.toString(16).padStart(2, "0")).join(" ")
      .replace(/((?:\S\S ){16})/g, "$1\n");
  }
  const text = new TextDecoder("utf-8", {fatal: false}).decode(bytes);
  if (format === "json") {
    try { return JSON.stringify(JSON.parse(text), null, 2); }
    catch (e) { return `(not JSON: ${e.message})\n${text}`; }
  }
  return text;
}

let ttlTimer = null;

function bucketPage(name) {
  const stats = h("dl", {id: "bucket-stats", class: "stats"});
  const chartBox = h("div", {id: "chart-box"});
  const list = h("ul", {id: "key-list", class: "keys", "aria-label": "Keys"});
  const more = h("button", {type: "button", id: "keys-next", hidden: true, text: "Next page"});
  const entry = h("section", {id: "entry", "aria-live": "polite", "aria-label": "Selected key"});
  const tail = h("ol", {id: "tail", class: "tail", "aria-label": "Live tail of changes"});
  const tailState = h("p", {id: "tail-state", class: "hint"});
  let cursor = "0", prefix = "";

  const search = h("form", {id: "key-search", class: "inline", role: "search", onsubmit: ev => {
    ev.preventDefault();
    prefix = new FormData(ev.target).get("prefix");
    cursor = "0";
    list.replaceChildren();
    loadKeys();
  }},
    h("label", {for: "prefix", text: "Key prefix"}),
    h("input", {id: "prefix", name: "prefix", type: "search"}),
    h("button", {type: "submit", text: "Search"}));

  const setForm = h("form", {id: "set-key", class: "inline", onsubmit: setKey},
    h("h3", {text: "Set a key"}),
    h("label", {for: "sk-key", text: "Key"}), h("input", {id: "sk-key", name: "key", required: true}),
    h("label", {for: "sk-value", text: "Value"}),
    h("textarea", {id: "sk-value", name: "value", rows: "2"}),
    h("label", {for: "sk-ttl", text: "TTL (s, empty: none)"}),
    h("input", {id: "sk-ttl", name: "ttl", type: "number", min: "0", step: "any"}),
    h("button", {type: "submit", text: "Set"}));

  more.addEventListener("click", loadKeys);
  page(`Bucket ${name}`, stats,
       h("div", {class: "cols"},
         h("section", {"aria-labelledby": "kb-title"},
           h("h3", {id: "kb-title", text: "Keys"}), search, list, more),
         h("div", {}, entry, setForm)),
       h("h3", {text: "Live tail"}), tailState, tail,
       h("h3", {text: "Live"}), chartBox);

  async function loadKeys() {
    const q = new URLSearchParams({cursor, count: String(KEYS_PAGE)});
    if (prefix) q.set("prefix", prefix);
    try {
      const r = await api("GET", `${API}/buckets/${encodeURIComponent(name)}/keys?${q}`);
      for (const k of r.keys) {
        const shown = r.encoding === "base64" ? `base64:${k}` : k;
        list.append(h("li", {}, h("button", {type: "button", class: "link", "data-key": k,
                                             onclick: () => openKey(k), text: shown})));
      }
      cursor = r.cursor;
      more.hidden = cursor === "0";
      if (!list.children.length) list.append(h("li", {class: "hint", text: "No keys."}));
    } catch (e) {
      notice(`Could not list the keys: ${e.message}`);
    }
  }

  let shownAs = "text";           // the format chosen stays for the next key

  async function openKey(key, format = shownAs) {
    shownAs = format;
    clearInterval(ttlTimer);
    try {
      // peek: looking at a single-read key must not consume it
      const r = await api("GET", keyPath(name, key) + "?peek=true", {raw: true});
      const bytes = new Uint8Array(await r.arrayBuffer());
      const version = (r.headers.get("ETag") || "").replace(/"/g, "");
      const ttl = r.headers.get("Bukt-TTL");
      const deadline = ttl === null ? null : Date.now() + parseFloat(ttl) * 1000;
      const ttlOut = h("output", {id: "entry-ttl"});
      const tick = () => {
        if (deadline === null) { ttlOut.textContent = "none"; return; }
        const left = Math.max(0, (deadline - Date.now()) / 1000);
        ttlOut.textContent = left > 0 ? `${left.toFixed(1)} s` : "expired";
      };
      tick();
      if (deadline !== null) ttlTimer = setInterval(tick, 100);
      const fmt = h("select", {id: "entry-format", onchange: ev => openKey(key, ev.target.value)},
        ["text", "json", "hex"].map(f => h("option", {value: f, selected: f === format, text: f})));
      const expireIn = h("input", {id: "entry-expire", type: "number", min: "0", step: "any",
                                   value: "60"});
      entry.replaceChildren(
        h("h3", {id: "entry-key", text: key}),
        h("dl", {class: "stats"}, h("dt", {text: "version"}), h("dd", {id: "entry-version", text: version}),
          h("dt", {text: "TTL"}), h("dd", {}, ttlOut),
          h("dt", {text: "size"}), h("dd", {text: human(bytes.length, "B")})),
        h("label", {for: "entry-format", text: "Show as"}), fmt,
        h("pre", {id: "entry-value", tabindex: "0"}, showValue(bytes, format)),
        h("div", {class: "row"},
          h("label", {for: "entry-expire", text: "Expire in (s)"}), expireIn,
          h("button", {type: "button", id: "entry-expire-btn", onclick: () =>
            expireKey(key, bytes, version, Number(expireIn.value)), text: "Set expiry"}),
          h("button", {type: "button", id: "entry-delete", class: "danger",
                       onclick: () => deleteKey(key), text: "Delete"})));
    } catch (e) {
      if (e.status === 404) entry.replaceChildren(h("p", {class: "hint", text: `${key}: no such key (gone).`}));
      else notice(`Could not read ${key}: ${e.message}`);
    }
  }

  async function setKey(ev) {
    ev.preventDefault();
    const f = new FormData(ev.target);
    const key = f.get("key");
    const headers = {"Content-Type": "application/octet-stream"};
    if (f.get("ttl")) headers["Bukt-TTL"] = f.get("ttl");
    try {
      await api("PUT", keyPath(name, key), {body: f.get("value"), headers});
      notice(`Set ${key}.`, "ok");
      refreshKeys();
      openKey(key);
    } catch (e) {
      notice(`Could not set ${key}: ${e.message}`);
    }
  }

  async function deleteKey(key) {
    if (!await confirmAction(`Delete key "${key}" from bucket ${name}?`)) return;
    try {
      await api("DELETE", keyPath(name, key));
      notice(`Deleted ${key}.`, "ok");
      entry.replaceChildren();
      refreshKeys();
    } catch (e) {
      notice(`Could not delete ${key}: ${e.message}`);
    }
  }

  async function expireKey(key, bytes, version, seconds) {
    if (!(seconds > 0)) { notice("An expiry needs a number of seconds above 0."); return; }
    if (!await confirmAction(`Make key "${key}" expire in ${seconds} s?`)) return;
    try {
      // the value as read, written back only if nobody changed it meanwhile
      await api("PUT", keyPath(name, key), {body: bytes,
        headers: {"Content-Type": "application/octet-stream", "Bukt-TTL": String(seconds),
                  "If-Match": `"${version}"`}});
      notice(`${key} expires in ${seconds} s.`, "ok");
      openKey(key);
    } catch (e) {
      if (e.status === 412) notice(`${key} changed meanwhile; look again before setting its expiry.`);
      else notice(`Could not set the expiry of ${key}: ${e.message}`);
    }
  }

  function refreshKeys() {
    cursor = "0";
    list.replaceChildren();
    loadKeys();
  }

  loadKeys();
  startTail(name, tail, tailState);
  startPolling(async () => {
    const t = Date.now() / 1000;
    const b = await api("GET", `${API}/buckets/${encodeURIComponent(name)}`);
    if (!session.admin) absorb({[name]: b.stats}, t, null);
    else await sampleAll();
    const s = b.stats;
    const looked = (s.hits || 0) + (s.misses || 0);
    stats.replaceChildren(...[["keys", human(s.keys || 0)], ["memory", human(s.memory || s.bytes || 0, "B")],
      ["hit rate", looked ? (100 * s.hits / looked).toFixed(1) + "%" : "-"],
      ["evictions", human(s.evictions || 0)], ["expirations", human(s.expirations || 0)],
      ["persist", b.persist ? "yes" : "no"], ["eviction", b.eviction],
      ["default TTL", b.default_ttl ? `${b.default_ttl} s` : "none"]]
      .flatMap(([k, v]) => [h("dt", {text: k}), h("dd", {text: v})]));
    chartBox.replaceChildren(charts([`ops:${name}`, `hits:${name}`, `misses:${name}`, `memory:${name}`]));
  });
}

// -- the live tail: the change feed as Server-Sent Events, read with fetch (EventSource
// cannot send the token in a header); resumes from the last id after a disconnect.
let tailAbort = null;

function stopTail() {
  if (tailAbort) tailAbort.abort();
  tailAbort = null;
}

async function feedListed(name) {
  // Is there a change feed on this server? The OpenAPI document says, without a
  // request that would fail (and log an error in the browser's console).
  try {
    const doc = await fetch(`${API}/openapi.json`).then(r => r.json());
    return Boolean(doc.paths?.[`${API}/buckets/{name}/watch`]);
  } catch (e) {
    return false;
  }
}

async function startTail(name, list, state) {
  stopTail();
  const ctrl = new AbortController();
  tailAbort = ctrl;
  if (!await feedListed(name)) {
    state.textContent = "Live tail: feed not available (this server has no change feed).";
    state.dataset.state = "unavailable";
    return;
  }
  let lastId = null, backoff = 500;
  while (!ctrl.signal.aborted) {
    try {
      const headers = {"X-Auth-Token": session.token, Accept: "text/event-stream"};
      if (lastId !== null) headers["Last-Event-ID"] = lastId;
      const r = await fetch(`${API}/buckets/${encodeURIComponent(name)}/watch`,
                            {headers, signal: ctrl.signal, cache: "no-store"});
      if (r.status === 404) {
        state.textContent = "Live tail: feed not available (this server has no change feed).";
        state.dataset.state = "unavailable";
        return;
      }
      if (r.status === 401) { endSession(); return; }
      if (!r.ok) throw new Error(`HTTP ${r.status}`);
      state.textContent = "Live tail: connected.";
      state.dataset.state = "connected";
      backoff = 500;
      const reader = r.body.pipeThrough(new TextDecoderStream()).getReader();
      let buf = "";
      for (;;) {
        const {value, done} = await reader.read();
        if (done) break;
        buf += value;
        let cut;
        while ((cut = buf.search(/\r?\n\r?\n/)) >= 0) {
          const block = buf.slice(0, cut);
          buf = buf.slice(cut).replace(/^\r?\n\r?\n/, "");
          const ev = {data: []};
          for (const line of block.split(/\r?\n/)) {
            if (line.startsWith(":")) continue;
            const i = line.indexOf(":");
            const field = i < 0 ? line : line.slice(0, i);
            const val = i < 0 ? "" : line.slice(i + 1).replace(/^ /, "");
            if (field === "data") ev.data.push(val);
            else ev[field] = val;
          }
          if (ev.id !== undefined) lastId = ev.id;
          if (ev.data.length) showEvent(list, ev);
        }
      }
    } catch (e) {
      if (ctrl.signal.aborted) return;
      state.textContent = `Live tail: disconnected (${e.message}); reconnecting.`;
      state.dataset.state = "reconnecting";
    }
    await new Promise(res => setTimeout(res, backoff));
    backoff = Math.min(backoff * 2, 10000);
  }
}

function showEvent(list, ev) {
  let d;
  try { d = JSON.parse(ev.data.join("\n")); } catch (e) { return; }
  const when = d.time ? new Date(d.time * 1000).toLocaleTimeString() : "";
  const text = ev.event === "gone" || d.kind === "gone"
    ? `gone: events before ${d.oldest ?? d.seq} are no longer held`
    : `#${d.seq} ${when} ${d.kind} ${d.key ?? ""}` +
      (d.version !== undefined ? ` v${d.version}` : "") + (d.ttl ? ` ttl ${d.ttl}` : "");
  list.prepend(h("li", {"data-kind": d.kind, "data-key": d.key, text}));
  while (list.children.length > TAIL_MAX) list.lastChild.remove();
}

// -- the service ------------------------------------------------------------------------------
function servicePage() {
  const box = h("div", {id: "service-box"});
  const chartBox = h("div", {id: "chart-box"});
  page("Service", box, h("h3", {text: "Live"}), chartBox);
  const dl = pairs => h("dl", {class: "stats"},
    pairs.flatMap(([k, v]) => [h("dt", {text: k}), h("dd", {text: v})]));
  startPolling(async () => {
    const [s] = await Promise.all([api("GET", `${API}/service`), sampleAll()]);
    const w = s.writer, f = s.faces, d = s.disk, c = s.compaction;
    const workers = face => f[face] ? `${f[face].alive ?? "?"} of ${f[face].workers}` +
      (f[face].bind ? ` on ${f[face].bind}` : "") : "-";
    box.replaceChildren(
      h("section", {class: "card", "aria-labelledby": "sv-writer"}, h("h3", {id: "sv-writer", text: "Writer"}),
        dl([["state", w.state + (w.error ? `: ${w.error}` : "")], ["pid", w.pid ?? "-"],
            ["fsync policy", w.fsync],
            ["fsync lag", w.fsync_lag_seconds === null ? "-" : `${w.fsync_lag_seconds.toFixed(2)} s`],
            ["heartbeat", w.heartbeat_age_seconds === null ? "-" : `${w.heartbeat_age_seconds.toFixed(2)} s ago`],
            ["log size", human(w.log_bytes, "B")], ["flushed seq", w.flushed_seq]])),
      h("section", {class: "card", "aria-labelledby": "sv-ring"}, h("h3", {id: "sv-ring", text: "Ring and disk"}),
        dl([["ring depth", `${human(s.ring.depth, "B")} of ${human(s.ring.size, "B")}`],
            ["not yet durable", human(s.ring.unflushed, "B")],
            ["logs", d ? `${d.logs}, ${human(d.log_bytes, "B")}` : "-"],
            ["base", d ? human(d.base_bytes, "B") : "-"],
            ["next compaction", c ? `at ${human(c.next_at_log_bytes, "B")} of logs ` +
              `(${Math.round(100 * c.progress)}%)` : "-"]])),
      h("section", {class: "card", "aria-labelledby": "sv-faces"}, h("h3", {id: "sv-faces", text: "Workers"}),
        dl([["HTTP workers", workers("http")],
            ["HTTP restarts (1 min)", f.http.restarts_last_minute],
            ["TCP workers", workers("tcp")], ["buckets", s.buckets], ["keys", human(s.keys)]])),
      h("section", {class: "card wide", "aria-labelledby": "sv-mem"}, h("h3", {id: "sv-mem", text: "Memory"}),
        dl([["used", `${human(s.memory.memory_used, "B")} of ${human(s.memory.segment_bytes, "B")}`],
            ["pages", `${s.memory.pages_used} of ${s.memory.pages_total} (${s.memory.pages_free} free)`],
            ["index", `${human(s.memory.index_used)} of ${human(s.memory.index_slots)} slots`]]),
        h("div", {class: "scroll"}, h("table", {id: "slab-table"},
          h("caption", {text: "Memory by slab class"}),
          h("thead", {}, h("tr", {}, ["chunk", "slabs", "slab memory", "chunks used", "bytes used"]
            .map(x => h("th", {scope: "col", text: x})))),
          h("tbody", {}, s.classes.length ? s.classes.map(k => h("tr", {},
            h("th", {scope: "row", text: human(k.chunk_size, "B")}),
            h("td", {class: "num", text: k.slabs}), h("td", {class: "num", text: human(k.slab_bytes, "B")}),
            h("td", {class: "num", text: `${k.used} of ${k.chunks}`}),
            h("td", {class: "num", text: human(k.used_bytes, "B")})))
            : h("tr", {}, h("td", {colspan: 5, text: "No slab in use."})))))));
    chartBox.replaceChildren(charts(["ops", "hits", "misses", "memory", "ring"]));
  });
}

// -- tokens (admin) ------------------------------------------------------------------------------
async function tokensPage(selected) {
  const {buckets} = await api("GET", `${API}/buckets`);
  const name = selected && buckets.includes(selected) ? selected : buckets[0];
  const pick = h("select", {id: "tk-bucket", onchange: ev => {
    location.hash = `#/tokens/${encodeURIComponent(ev.target.value)}`;
  }}, buckets.map(b => h("option", {value: b, selected: b === name, text: b})));
  const listBox = h("div", {id: "tokens-box"});
  const created = h("div", {id: "token-created", "aria-live": "polite"});
  const perms = ["read", "write", "admin"];
  const form = h("form", {id: "create-token", class: "inline", onsubmit: createToken},
    h("fieldset", {}, h("legend", {text: "Permissions of a new token"}),
      perms.map(p => h("label", {class: "check"}, h("input", {type: "checkbox", name: p,
                                                              checked: p === "read"}), p))),
    h("button", {type: "submit", text: "Create token"}));
  if (!name) {
    page("Tokens", h("p", {class: "hint", text: "No buckets yet: create one on the Buckets page."}));
    return;
  }
  page("Tokens", h("label", {for: "tk-bucket", text: "Bucket"}), pick, listBox, form, created);
  await load();

  async function load() {
    const {tokens} = await api("GET", `${API}/buckets/${encodeURIComponent(name)}/tokens`);
    listBox.replaceChildren(h("table", {id: "token-table"},
      h("caption", {text: `Tokens of ${name}`}),
      h("thead", {}, h("tr", {}, ["id", "permissions", ""].map(x => h("th", {scope: "col", text: x})))),
      h("tbody", {}, tokens.map(t => h("tr", {"data-id": t.id},
        h("th", {scope: "row", text: t.id}), h("td", {text: t.permissions.join(", ")}),
        h("td", {}, h("button", {type: "button", class: "danger", "data-revoke": t.id,
                                 "aria-label": `Revoke token ${t.id}`,
                                 onclick: () => revoke(t.id), text: "Revoke"})))))));
  }

  async function revoke(id) {
    if (!await confirmAction(`Revoke token ${id} of bucket ${name}? Programs using it ` +
                             "are refused from their next request on.")) return;
    try {
      await api("DELETE", `${API}/buckets/${encodeURIComponent(name)}/tokens/${id}`);
      notice(`Token ${id} revoked.`, "ok");
      await load();
    } catch (e) {
      notice(`Could not revoke token ${id}: ${e.message}`);
    }
  }

  async function createToken(ev) {
    ev.preventDefault();
    const f = new FormData(ev.target);
    const chosen = perms.filter(p => f.get(p) === "on");
    try {
      const r = await api("POST", `${API}/buckets/${encodeURIComponent(name)}/tokens`,
                          {body: {permissions: chosen}});
      created.replaceChildren(h("p", {class: "ok"}, `Token ${r.id} (${r.permissions.join(", ")}), shown once: `,
                                  h("code", {id: "new-token", text: r.token})));
      await load();
    } catch (e) {
      notice(`Could not create a token: ${e.message}`);
    }
  }
}

// -- confirmation, routing -------------------------------------------------------------------
function confirmAction(text) {
  const d = $("#confirm");
  $("#confirm-text").textContent = text;
  return new Promise(resolve => {
    d.addEventListener("close", () => resolve(d.returnValue === "ok"), {once: true});
    d.returnValue = "";
    d.showModal();
    $("#confirm-cancel").focus();
  });
}

function route() {
  stopPolling();
  stopTail();
  clearInterval(ttlTimer);
  const [, pageName, arg] = (location.hash || "").split("/").map(decodeURIComponent);
  const signedIn = Boolean(session);
  $("#signin").hidden = signedIn;
  $("#nav").hidden = !signedIn;
  if (!signedIn) {
    $("#page").replaceChildren();
    $("#signin-token").focus();
    return;
  }
  for (const a of document.querySelectorAll("#nav [data-admin]")) a.hidden = !session.admin;
  for (const a of document.querySelectorAll("#nav a"))
    a.toggleAttribute("aria-current", a.dataset.page === (pageName || "buckets"));
  const go = {
    buckets: () => bucketsPage(),
    bucket: () => bucketPage(arg || session.bucket),
    service: () => session.admin ? servicePage() : bucketsPage(),
    tokens: () => session.admin ? tokensPage(arg) : bucketsPage(),
  }[pageName] || (() => session.admin ? bucketsPage() : bucketPage(session.bucket));
  Promise.resolve(go()).catch(e => notice(e.message));
  $("#page-title")?.focus();
}

$("#signin-form").addEventListener("submit", async ev => {
  ev.preventDefault();
  const f = new FormData(ev.target);
  try {
    session = await signIn(f.get("token").trim(), f.get("bucket").trim() || null);
    sessionStorage.setItem(STORE_KEY, JSON.stringify(session));
    ev.target.reset();
    notice("");
    location.hash = session.admin ? "#/buckets" : `#/bucket/${encodeURIComponent(session.bucket)}`;
    route();
  } catch (e) {
    notice(e.message);
  }
});

$("#signout").addEventListener("click", () => {
  sessionStorage.removeItem(STORE_KEY);
  session = null;
  notice("Signed out.", "ok");
  location.hash = "#/signin";
});

window.addEventListener("hashchange", route);
route();
