// Nexus console. Plain browser JavaScript, no framework, no build step.
// It talks only to the gateway (same origin) with the signed-in user's token, which lives in
// this script's memory only: never in localStorage, sessionStorage or a readable cookie.
// A reload signs out. Every API error is shown with the API's own (OpenAI) error message.
"use strict";

(() => {
  const S = {
    token: null, refresh: null, kind: null, me: null, refreshTimer: null,
    feed: null, models: [], page: null,
  };
  const ADMIN_PAGES = new Set(["overview", "aliases"]);
  const $ = (sel, root = document) => root.querySelector(sel);

  // -- DOM helpers (text only: API data never becomes HTML) -------------------------------
  function h(tag, attrs, ...children) {
    const el = document.createElement(tag);
    for (const [k, v] of Object.entries(attrs || {})) {
      if (v === null || v === undefined || v === false) continue;
      if (k.startsWith("on")) el.addEventListener(k.slice(2), v);
      else if (k === "class") el.className = v;
      else if (k === "style") el.style.cssText = v; // CSSOM: allowed by the page's CSP
      else el.setAttribute(k, v === true ? "" : v);
    }
    for (const c of children.flat()) {
      if (c === null || c === undefined || c === false) continue;
      el.append(c instanceof Node ? c : document.createTextNode(String(c)));
    }
    return el;
  }
  const svg = (tag, attrs) => {
    const el = document.createElementNS("http://www.w3.org/2000/svg", tag);
    for (const [k, v] of Object.entries(attrs)) el.setAttribute(k, v);
    return el;
  };
  const fmt = (n) => (n === null || n === undefined || n === "" ? "—" : Number(n).toLocaleString());
  const when = (iso) => (iso ? new Date(iso).toLocaleTimeString() : "—");
  const unix = (t) => (t ? new Date(t * 1000).toLocaleString() : "—");
  const sleep = (ms) => new Promise((r) => setTimeout(r, ms));

  function showError(message) {
    const box = $("#error");
    box.textContent = message || "";
    box.hidden = !message;
  }

  // -- API ---------------------------------------------------------------------------------
  class ApiError extends Error {
    constructor(status, message, code) { super(message); this.status = status; this.code = code; }
  }

  async function toError(res) {
    let message = `${res.status} ${res.statusText}`;
    let code = null;
    try {
      const body = await res.json();
      if (body && body.error) {
        message = body.error.message || message;
        code = body.error.code || body.error.type || null;
      }
    } catch (_) { /* not JSON: keep the status line */ }
    return new ApiError(res.status, message, code);
  }

  async function call(method, path, body, opts = {}) {
    const headers = { ...(opts.headers || {}) };
    if (S.token && !opts.anonymous) headers.Authorization = `Bearer ${S.token}`;
    if (body !== undefined) headers["Content-Type"] = "application/json";
    const res = await fetch(path, {
      method, headers, signal: opts.signal, cache: "no-store", credentials: "omit",
      body: body === undefined ? undefined : JSON.stringify(body),
    });
    if (res.status === 401 && S.kind === "jwt" && !opts.anonymous && !opts.retried) {
      if (await refreshTokens()) return call(method, path, body, { ...opts, retried: true });
    }
    if (!res.ok) throw await toError(res);
    return res;
  }
  const api = async (method, path, body, opts) => {
    const res = await call(method, path, body, opts);
    return res.status === 204 ? null : res.json();
  };

  // Server-Sent Events from a fetch response (EventSource cannot send a bearer).
  async function* sse(res) {
    const reader = res.body.pipeThrough(new TextDecoderStream()).getReader();
    let buffer = "";
    for (;;) {
      const { value, done } = await reader.read();
      if (done) return;
      buffer += value.replace(/\r\n?/g, "\n");
      let cut;
      while ((cut = buffer.indexOf("\n\n")) >= 0) {
        const block = buffer.slice(0, cut);
        buffer = buffer.slice(cut + 2);
        let event = "message";
        const data = [];
        for (const line of block.split("\n")) {
          if (line.startsWith("event:")) event = line.slice(6).trim();
          else if (line.startsWith("data:")) data.push(line.slice(5).replace(/^ /, ""));
        }
        if (data.length) yield { event, data: data.join("\n") };
      }
    }
  }

  // -- session -----------------------------------------------------------------------------
  async function refreshTokens() {
    if (!S.refresh) return false;
    try {
      const res = await call("POST", "/v1/auth/refresh", { refresh_token: S.refresh }, { anonymous: true });
      adoptTokens(await res.json());
      return true;
    } catch (_) {
      signOut("Your session ended; sign in again.");
      return false;
    }
  }

  function adoptTokens(tokens) {
    S.token = tokens.access_token;
    S.refresh = tokens.refresh_token;
    S.kind = "jwt";
    clearTimeout(S.refreshTimer);
    // Renew before it expires: 30 s early, or a fifth of its life when that is shorter.
    const life = tokens.expires_in || 300;
    S.refreshTimer = setTimeout(refreshTokens, Math.max(1, life - Math.min(30, life / 5)) * 1000);
  }

  async function signIn(credentials) {
    showError("");
    if (credentials.apiKey) {
      S.token = credentials.apiKey;
      S.kind = "api_key";
    } else {
      const res = await call("POST", "/v1/auth/token",
        { username: credentials.username, password: credentials.password }, { anonymous: true });
      adoptTokens(await res.json());
    }
    try {
      S.me = await api("GET", "/v1/auth/me");
    } catch (e) {
      S.token = S.refresh = S.kind = null;
      throw e;
    }
    $("#who-name").textContent = S.me.username;
    $("#who-role").textContent = S.me.role;
    $("#who").hidden = false;
    const nav = $("#nav");
    for (const a of nav.querySelectorAll("[data-admin]")) a.hidden = !isAdmin();
    nav.hidden = false;
    const wanted = location.hash.slice(1);
    route(wanted || (isAdmin() ? "overview" : "playground"));
  }

  function signOut(message) {
    stopFeed();
    clearTimeout(S.refreshTimer);
    Object.assign(S, { token: null, refresh: null, kind: null, me: null, models: [] });
    $("#nav").hidden = true;
    $("#who").hidden = true;
    history.replaceState(null, "", location.pathname);
    renderSignIn();
    showError(message || "");
  }

  const isAdmin = () => S.me && S.me.role === "admin";

  // -- routing -----------------------------------------------------------------------------
  const PAGES = { overview: renderOverview, keys: renderKeys, usage: renderUsage,
    aliases: renderAliases, playground: renderPlayground };

  function route(name) {
    if (!S.me) return renderSignIn();
    if (!PAGES[name] || (ADMIN_PAGES.has(name) && !isAdmin())) name = isAdmin() ? "overview" : "playground";
    if (location.hash.slice(1) !== name) history.replaceState(null, "", `#${name}`);
    stopFeed();
    showError("");
    S.page = name;
    for (const a of document.querySelectorAll("#nav a")) a.classList.toggle("active", a.dataset.page === name);
    const view = $("#view");
    view.replaceChildren();
    view.dataset.page = name;
    PAGES[name](view);
  }

  window.addEventListener("hashchange", () => route(location.hash.slice(1)));

  // -- sign in -----------------------------------------------------------------------------
  function renderSignIn() {
    const view = $("#view");
    view.dataset.page = "signin";
    const problem = h("p", { class: "inline-error", id: "signin-error", hidden: true });
    const fail = (e) => { problem.textContent = e.message; problem.hidden = false; };
    const form = h("form", { id: "signin-password", onsubmit: async (ev) => {
      ev.preventDefault();
      const data = new FormData(form);
      try { await signIn({ username: data.get("username"), password: data.get("password") }); }
      catch (e) { fail(e); }
    } },
      h("label", {}, "Username", h("input", { name: "username", autocomplete: "username", required: true })),
      h("label", {}, "Password", h("input", { name: "password", type: "password", autocomplete: "current-password", required: true })),
      h("button", { type: "submit" }, "Sign in"));
    const keyForm = h("form", { id: "signin-key", onsubmit: async (ev) => {
      ev.preventDefault();
      try { await signIn({ apiKey: new FormData(keyForm).get("key").trim() }); } catch (e) { fail(e); }
    } },
      h("label", {}, "API key", h("input", { name: "key", type: "password", autocomplete: "off", placeholder: "nx-…", required: true })),
      h("button", { type: "submit", class: "secondary" }, "Sign in with a key"));
    view.replaceChildren(h("div", { class: "signin" },
      h("div", { class: "card" }, h("h1", {}, "Sign in to Nexus"), form, problem),
      h("div", { class: "card" }, keyForm),
      h("p", { class: "muted" }, "Your token is kept in this tab's memory only; reloading signs you out.")));
  }

  // -- overview (admin, live) --------------------------------------------------------------
  function stopFeed() {
    if (S.feed) S.feed.abort();
    S.feed = null;
  }

  function renderOverview(view) {
    const status = h("span", { class: "live", id: "live-status" }, "connecting…");
    const body = h("div", { id: "overview-body" }, h("p", { class: "muted" }, "Waiting for the first snapshot…"));
    view.append(h("div", { class: "row head" }, h("h1", {}, "Overview"), status), body);
    const ctrl = new AbortController();
    S.feed = ctrl;
    (async () => {
      while (!ctrl.signal.aborted) {
        try {
          const res = await call("GET", "/v1/services/events", undefined,
            { signal: ctrl.signal, headers: { Accept: "text/event-stream" } });
          status.className = "live on";
          status.textContent = "live";
          for await (const ev of sse(res)) {
            if (ev.event === "snapshot") renderSnapshot(body, JSON.parse(ev.data), status);
          }
        } catch (e) {
          if (ctrl.signal.aborted) return;
          if (e instanceof ApiError && (e.status === 401 || e.status === 403)) {
            status.className = "live off";
            status.textContent = "refused";
            showError(e.message);
            return;
          }
        }
        status.className = "live off";
        status.textContent = "reconnecting…";
        await sleep(1000);
      }
    })();
  }

  function renderSnapshot(body, snap, status) {
    status.textContent = `live · revision ${snap.revision} · ${new Date().toLocaleTimeString()}`;
    const services = snap.services.data;
    const instances = services.flatMap((s) => s.instances);
    const routes = snap.routes.data.filter((r) => !r.service);
    const etcd = snap.services.etcd || {};
    body.replaceChildren(
      h("div", { class: "stats" },
        stat("Services", services.length, "stat-services"), stat("Instances", instances.length, "stat-instances"),
        stat("Routes", routes.length, "stat-routes"), stat("Models", snap.models.data.length, "stat-models"),
        h("div", { class: "card stat" }, h("span", { class: "muted" }, "etcd"),
          h("b", {}, etcd.connected ? "connected" : "—"), etcd.error ? h("span", { class: "muted" }, etcd.error) : null)),
      h("h2", {}, "Services and instances"),
      table(["Service", "Instance", "State", "Draining", "In flight", "Last seen", "Version", "Source"],
        services.flatMap((s) => s.instances.map((i) => h("tr", { "data-service": s.name, "data-instance": i.instance_id },
          h("td", {}, s.name), h("td", { class: "mono" }, i.instance_id),
          h("td", {}, h("span", { class: `pill ${i.state}` }, i.state), i.error ? h("div", { class: "muted" }, i.error) : null),
          h("td", {}, i.draining ? "yes" : "no"), h("td", { class: "num" }, fmt(i.in_flight)),
          h("td", {}, when(i.last_seen)), h("td", {}, i.version || "—"),
          h("td", {}, `${i.source}${i.kind && i.kind !== "nexus" ? ` (${i.kind})` : ""}`)))),
        "services-table", "No service is registered."),
      h("h2", {}, "Routing table"),
      table(["Method", "Path", "Operation", "Instances", "Models"],
        routes.map((r) => h("tr", { "data-path": r.path },
          h("td", { class: "mono" }, r.method), h("td", { class: "mono" }, r.path, r.public ? h("span", { class: "pill" }, " public") : null),
          h("td", { class: "mono" }, r.operation_id),
          h("td", {}, r.targets.length ? r.targets.map((t) => h("div", {}, h("span", { class: `pill ${t.state}` }, t.state), ` ${t.service}/${t.instance_id}`)) : h("span", { class: "muted" }, "none")),
          h("td", { class: "mono" }, [...new Set(r.targets.flatMap((t) => t.models))].join(", ") || "any"))),
        "routes-table", "No routes yet."),
      h("h2", {}, "Models (/v1/models)"),
      table(["Model", "Owned by"], snap.models.data.map((m) => h("tr", { "data-model": m.id },
        h("td", { class: "mono" }, m.id), h("td", {}, m.owned_by))), "models-table", "No ready instance serves a model."));
  }

  function stat(label, value, id) {
    return h("div", { class: "card stat" }, h("span", { class: "muted" }, label), h("b", { id }, fmt(value)));
  }

  function table(headers, rows, id, empty) {
    if (!rows.length) return h("div", { class: "card empty", id }, empty);
    return h("table", { id }, h("thead", {}, h("tr", {}, headers.map((x) => h("th", {}, x)))), h("tbody", {}, rows));
  }

  // -- keys --------------------------------------------------------------------------------
  const LIMITS = [["rate_limit_rpm", "Requests / min"], ["rate_limit_tpm", "Tokens / min"],
    ["token_budget_daily", "Tokens / day"], ["token_budget_monthly", "Tokens / month"]];

  function limitValues(form) {
    const data = new FormData(form);
    const out = {};
    for (const [field] of LIMITS) {
      const raw = String(data.get(field) || "").trim();
      if (raw !== "") out[field] = Number(raw);
    }
    return out;
  }

  function renderKeys(view) {
    const problem = h("p", { class: "inline-error", hidden: true });
    const fail = (e) => { problem.textContent = e.message; problem.hidden = false; };
    const secretBox = h("div", { id: "new-key" });
    const list = h("div", { id: "keys-list" }, h("p", { class: "muted" }, "Loading…"));
    const form = h("form", { id: "create-key", class: "row", onsubmit: async (ev) => {
      ev.preventDefault();
      problem.hidden = true;
      const body = { name: new FormData(form).get("name"), ...limitValues(form) };
      const owner = String(new FormData(form).get("user_id") || "").trim();
      if (owner) body.user_id = owner;
      try {
        const created = await api("POST", "/v1/api-keys", body);
        showSecret(secretBox, created);
        form.reset();
        await loadKeys(list, fail);
      } catch (e) { fail(e); }
    } },
      h("label", {}, "Name", h("input", { name: "name", required: true, maxlength: 128 })),
      LIMITS.map(([field, label]) => h("label", {}, label, h("input", { name: field, type: "number", min: 1, step: 1 }))),
      isAdmin() ? h("label", {}, "Owner user id (optional)", h("input", { name: "user_id", placeholder: "usr_…" })) : null,
      h("button", { type: "submit" }, "Create key"));
    view.append(h("h1", {}, "API keys"),
      h("div", { class: "card" }, h("h2", {}, "New key"), form, problem, secretBox),
      h("p", { class: "muted" }, isAdmin() ? "Every user's active keys." : "Your active keys."), list);
    loadKeys(list, fail);
  }

  function showSecret(box, created) {
    const code = h("code", { id: "new-key-secret" }, created.key);
    const copied = h("span", { class: "muted" });
    box.replaceChildren(h("div", { class: "secret" },
      h("div", {}, h("b", {}, `Key “${created.name}” created. `), "Copy it now: it is shown only once."),
      h("div", { class: "row" }, code, h("button", { type: "button", class: "secondary", id: "copy-key", onclick: async () => {
        try { await navigator.clipboard.writeText(created.key); copied.textContent = "Copied."; }
        catch (_) { getSelection().selectAllChildren(code); copied.textContent = "Selected: press Ctrl+C."; }
      } }, "Copy"), copied)));
  }

  async function loadKeys(list, fail) {
    let keys;
    try { keys = (await api("GET", "/v1/api-keys")).data; } catch (e) { list.replaceChildren(); return fail(e); }
    const headers = ["Name", "Id", "Prefix", ...(isAdmin() ? ["Owner"] : []), ...LIMITS.map(([, l]) => l), "Created", ""];
    list.replaceChildren(table(headers, keys.map((k) => keyRow(k, list, fail)), "keys-table", "No active keys."));
  }

  function keyRow(key, list, fail) {
    const row = h("tr", { "data-key": key.id, "data-name": key.name });
    const actions = h("td", {});
    const edit = h("button", { type: "button", class: "secondary", onclick: () => editKey(row, key, list, fail) }, "Edit limits");
    const revoke = h("button", { type: "button", class: "danger", onclick: async () => {
      if (revoke.dataset.armed !== "1") { revoke.dataset.armed = "1"; revoke.textContent = "Confirm revoke"; return; }
      try { await api("DELETE", `/v1/api-keys/${encodeURIComponent(key.id)}`); await loadKeys(list, fail); } catch (e) { fail(e); }
    } }, "Revoke");
    if (isAdmin()) actions.append(edit, " "); // the auth service lets admins change limits
    actions.append(revoke);
    const cells = [h("td", {}, key.name), h("td", { class: "mono" }, key.id), h("td", { class: "mono" }, key.prefix),
      isAdmin() ? h("td", { class: "mono" }, key.user_id) : null,
      ...LIMITS.map(([field]) => h("td", { class: "num", "data-field": field }, field in key ? fmt(key[field]) : "—")),
      h("td", {}, unix(key.created_at)), actions];
    row.append(...cells.filter(Boolean));
    return row;
  }

  function editKey(row, key, list, fail) {
    const form = h("form", { class: "row", onsubmit: async (ev) => {
      ev.preventDefault();
      const values = limitValues(form);
      const body = {};
      for (const [field] of LIMITS) {
        const next = field in values ? values[field] : null;
        if (next !== (key[field] ?? null)) body[field] = next;
      }
      try { await api("PATCH", `/v1/api-keys/${encodeURIComponent(key.id)}`, body); await loadKeys(list, fail); }
      catch (e) { fail(e); }
    } },
      LIMITS.map(([field, label]) => h("label", {}, label,
        h("input", { name: field, type: "number", min: 1, step: 1, value: key[field] ?? "", placeholder: "no limit" }))),
      h("button", { type: "submit" }, "Save"),
      h("button", { type: "button", class: "secondary", onclick: () => loadKeys(list, fail) }, "Cancel"));
    row.replaceChildren(h("td", { colspan: 20 }, h("b", {}, `Limits of “${key.name}”`), form));
  }

  // -- usage -------------------------------------------------------------------------------
  const COLORS = ["#2454d6", "#1a7f37", "#bf8700", "#cf222e", "#8250df", "#0a7ea4", "#d1242f", "#6e7781"];

  function renderUsage(view) {
    const out = h("div", { id: "usage-body" });
    const controls = h("form", { class: "row card", onchange: () => load(), onsubmit: (ev) => { ev.preventDefault(); load(); } },
      h("label", {}, "Group by", h("select", { name: "group_by" }, h("option", { value: "model" }, "model"), h("option", { value: "api_key_id" }, "API key"))),
      h("label", {}, "Bucket", h("select", { name: "bucket_width" }, h("option", { value: "1d" }, "day"), h("option", { value: "1h" }, "hour"))),
      h("label", {}, "Period", h("select", { name: "days" }, h("option", { value: "1" }, "24 hours"), h("option", { value: "7", selected: true }, "7 days"), h("option", { value: "30" }, "30 days"))),
      h("button", { type: "submit", class: "secondary" }, "Refresh"));
    view.append(h("h1", {}, "Usage"), controls, out);
    async function load() {
      const data = new FormData(controls);
      const width = data.get("bucket_width");
      const days = Number(data.get("days"));
      const start = Math.floor(Date.now() / 1000) - days * 86400;
      const limit = width === "1h" ? Math.min(168, days * 24) : Math.min(31, days);
      const group = data.get("group_by");
      out.replaceChildren(h("p", { class: "muted" }, "Loading…"));
      let buckets = [];
      let page = null;
      try {
        for (let i = 0; i < 10; i++) {
          const q = new URLSearchParams({ start_time: start, bucket_width: width, group_by: group, limit });
          if (page) q.set("page", page);
          const res = await api("GET", `/v1/organization/usage/completions?${q}`);
          buckets = buckets.concat(res.data || []);
          if (!res.has_more || !res.next_page) break;
          page = res.next_page;
        }
      } catch (e) {
        const missing = e instanceof ApiError && [404, 502, 503].includes(e.status);
        out.replaceChildren(h("div", { class: "card empty", id: "usage-empty" },
          missing ? "No usage data: the usage service is not running (yet)." : "Usage could not be loaded.",
          h("div", { class: "inline-error" }, e.message)));
        return;
      }
      renderUsageData(out, buckets, group);
    }
    load();
  }

  function renderUsageData(out, buckets, group) {
    const rows = [];
    for (const b of buckets) for (const r of b.results || []) rows.push({ start: b.start_time, key: r[group] || "(none)", r });
    if (!rows.length) {
      out.replaceChildren(h("div", { class: "card empty", id: "usage-empty" }, "No usage recorded in this period."));
      return;
    }
    const keys = [...new Set(rows.map((x) => x.key))];
    const color = (k) => COLORS[keys.indexOf(k) % COLORS.length];
    const tokens = (r) => (r.input_tokens || 0) + (r.output_tokens || 0);
    out.replaceChildren(
      h("div", { class: "legend" }, keys.map((k) => h("span", {}, h("i", { style: `background:${color(k)}` }), k))),
      h("div", { class: "grid2" },
        h("div", { class: "card" }, h("h2", {}, "Tokens"), bars(buckets, rows, tokens, color, "chart-tokens")),
        h("div", { class: "card" }, h("h2", {}, "Requests"), bars(buckets, rows, (r) => r.num_model_requests || 0, color, "chart-requests"))),
      table(["Bucket start", group === "model" ? "Model" : "API key", "Requests", "Input tokens", "Output tokens"],
        rows.map((x) => h("tr", {}, h("td", {}, unix(x.start)), h("td", { class: "mono" }, x.key),
          h("td", { class: "num" }, fmt(x.r.num_model_requests)), h("td", { class: "num" }, fmt(x.r.input_tokens)),
          h("td", { class: "num" }, fmt(x.r.output_tokens)))), "usage-table", ""));
  }

  function bars(buckets, rows, value, color, id) {
    const W = 600, H = 200, pad = 24;
    const chart = svg("svg", { viewBox: `0 0 ${W} ${H}`, class: "chart", id, role: "img" });
    const totals = buckets.map((b) => rows.filter((x) => x.start === b.start_time).reduce((s, x) => s + value(x.r), 0));
    const max = Math.max(1, ...totals);
    const w = (W - pad) / Math.max(1, buckets.length);
    buckets.forEach((b, i) => {
      let y = H - pad;
      for (const x of rows.filter((r) => r.start === b.start_time)) {
        const hgt = (value(x.r) / max) * (H - 2 * pad);
        y -= hgt;
        const rect = svg("rect", { x: pad + i * w + 1, y, width: Math.max(1, w - 2), height: hgt, fill: color(x.key) });
        rect.append(svg("title", {}));
        rect.lastChild.textContent = `${x.key}: ${value(x.r).toLocaleString()}`;
        chart.append(rect);
      }
    });
    const top = svg("text", { x: 2, y: pad - 8, "font-size": 11, fill: "#5f6b7a" });
    top.textContent = max.toLocaleString();
    chart.append(top, svg("line", { x1: pad, y1: H - pad, x2: W, y2: H - pad, stroke: "#dde3ea" }));
    return chart;
  }

  // -- aliases (admin) ---------------------------------------------------------------------
  function renderAliases(view) {
    const problem = h("p", { class: "inline-error", hidden: true });
    const fail = (e) => { problem.textContent = e.message; problem.hidden = false; };
    const list = h("div", { id: "aliases-list" });
    const options = h("datalist", { id: "model-ids" });
    const form = h("form", { id: "alias-form", class: "row", onsubmit: async (ev) => {
      ev.preventDefault();
      problem.hidden = true;
      const data = new FormData(form);
      const models = String(data.get("models")).split(/[\n,]/).map((m) => m.trim()).filter(Boolean);
      try {
        await api("PUT", `/v1/aliases/${encodeURIComponent(String(data.get("alias")).trim())}`, { models });
        form.reset();
        load();
      } catch (e) { fail(e); }
    } },
      h("label", {}, "Alias", h("input", { name: "alias", required: true, list: "model-ids" })),
      h("label", { style: "flex:1" }, "Models, in fallback order (one per line or comma-separated)",
        h("textarea", { name: "models", required: true, rows: 2 })),
      h("button", { type: "submit" }, "Save alias"));
    view.append(h("h1", {}, "Model aliases"), h("div", { class: "card" }, form, options, problem), list);
    loadModels().then((models) => options.replaceChildren(...models.map((m) => h("option", { value: m }))));
    async function load() {
      let aliases;
      try { aliases = (await api("GET", "/v1/aliases")).data; } catch (e) { list.replaceChildren(); return fail(e); }
      list.replaceChildren(table(["Alias", "Models (fallback order)", ""], aliases.map((a) => h("tr", { "data-alias": a.id },
        h("td", { class: "mono" }, a.id), h("td", {}, h("ol", {}, a.models.map((m) => h("li", { class: "mono" }, m)))),
        h("td", {}, h("button", { type: "button", class: "danger", onclick: async () => {
          try { await api("DELETE", `/v1/aliases/${encodeURIComponent(a.id)}`); load(); } catch (e) { fail(e); }
        } }, "Delete")))), "aliases-table", "No aliases yet."));
    }
    load();
  }

  // -- playground --------------------------------------------------------------------------
  async function loadModels() {
    try { S.models = (await api("GET", "/v1/models")).data.map((m) => m.id); } catch (e) { showError(e.message); }
    return S.models;
  }

  function modelSelect(name, prefer, optional) {
    const select = h("select", { name, id: `${name}-model` });
    loadModels().then((models) => {
      const opts = models.map((m) => h("option", { value: m }, m));
      select.replaceChildren(...(optional ? [h("option", { value: "" }, "(service default)")] : []), ...opts);
      const hit = models.find((m) => prefer.test(m));
      if (hit) select.value = hit;
    });
    return select;
  }

  function renderPlayground(view) {
    view.append(h("h1", {}, "Playground"), h("div", { class: "grid2" }, chatCard(), h("div", {}, imageCard(), speechCard())));
  }

  function chatCard() {
    const model = modelSelect("chat", /llama|qwen|gpt|mistral|gemma|phi|chat/i, false);
    const output = h("div", { class: "output", id: "chat-output", "aria-live": "polite" });
    const problem = h("p", { class: "inline-error", hidden: true });
    const stop = h("button", { type: "button", class: "secondary", disabled: true }, "Stop");
    let ctrl = null;
    stop.addEventListener("click", () => ctrl && ctrl.abort());
    const form = h("form", { id: "chat-form", onsubmit: async (ev) => {
      ev.preventDefault();
      problem.hidden = true;
      output.textContent = "";
      ctrl = new AbortController();
      stop.disabled = false;
      const body = { model: model.value, stream: true,
        messages: [{ role: "user", content: new FormData(form).get("prompt") }] };
      try {
        const res = await call("POST", "/v1/chat/completions", body, { signal: ctrl.signal });
        for await (const ev of sse(res)) {
          if (ev.data === "[DONE]") break;
          const chunk = JSON.parse(ev.data);
          if (chunk.error) throw new ApiError(0, chunk.error.message || "stream error");
          const delta = chunk.choices && chunk.choices[0] && chunk.choices[0].delta;
          if (delta && delta.content) output.textContent += delta.content;
        }
        output.dataset.done = "1";
      } catch (e) {
        if (!ctrl.signal.aborted) { problem.textContent = e.message; problem.hidden = false; }
      } finally { stop.disabled = true; }
    } },
      h("label", {}, "Model", model),
      h("label", {}, "Message", h("textarea", { name: "prompt", required: true }, "Say hello in five words.")),
      h("div", { class: "row" }, h("button", { type: "submit" }, "Send"), stop));
    return h("div", { class: "card" }, h("h2", {}, "Chat (streaming)"), form, problem, output);
  }

  function imageCard() {
    const model = modelSelect("image", /dall-e|image|sd|flux|stub/i, true);
    const problem = h("p", { class: "inline-error", hidden: true });
    const slot = h("div", {});
    const form = h("form", { id: "image-form", onsubmit: async (ev) => {
      ev.preventDefault();
      problem.hidden = true;
      const data = new FormData(form);
      const body = { prompt: data.get("prompt"), size: data.get("size"), n: 1, response_format: "b64_json" };
      if (model.value) body.model = model.value;
      try {
        const res = await api("POST", "/v1/images/generations", body);
        const item = res.data[0];
        const src = item.b64_json ? `data:image/png;base64,${item.b64_json}` : item.url;
        slot.replaceChildren(h("img", { id: "image-output", class: "generated", src, alt: String(data.get("prompt")) }));
      } catch (e) { problem.textContent = e.message; problem.hidden = false; }
    } },
      h("div", { class: "row" }, h("label", {}, "Model", model),
        h("label", {}, "Size", h("select", { name: "size" }, ["256x256", "512x512", "1024x1024"].map((s) => h("option", {}, s))))),
      h("label", {}, "Prompt", h("textarea", { name: "prompt", required: true }, "A lighthouse at dawn")),
      h("button", { type: "submit" }, "Generate"));
    return h("div", { class: "card" }, h("h2", {}, "Image"), form, problem, slot);
  }

  function speechCard() {
    const model = modelSelect("speech", /tts|speech|kokoro|piper/i, false);
    const problem = h("p", { class: "inline-error", hidden: true });
    const audio = h("audio", { id: "speech-output", controls: true });
    const form = h("form", { id: "speech-form", onsubmit: async (ev) => {
      ev.preventDefault();
      problem.hidden = true;
      const data = new FormData(form);
      const body = { model: model.value, input: data.get("input"), voice: data.get("voice"), response_format: data.get("format") };
      try {
        const res = await call("POST", "/v1/audio/speech", body);
        const blob = await res.blob();
        if (audio.src) URL.revokeObjectURL(audio.src);
        audio.src = URL.createObjectURL(blob);
        await audio.play().catch(() => {});
      } catch (e) { problem.textContent = e.message; problem.hidden = false; }
    } },
      h("div", { class: "row" }, h("label", {}, "Model", model),
        h("label", {}, "Voice", h("select", { name: "voice" }, ["alloy", "echo", "fable", "onyx", "nova", "shimmer"].map((v) => h("option", {}, v)))),
        h("label", {}, "Format", h("select", { name: "format" }, ["wav", "mp3", "opus", "flac"].map((v) => h("option", {}, v))))),
      h("label", {}, "Text", h("textarea", { name: "input", required: true }, "Hello from Nexus.")),
      h("button", { type: "submit" }, "Speak"));
    return h("div", { class: "card" }, h("h2", {}, "Speech"), form, problem, audio);
  }

  // -- start -------------------------------------------------------------------------------
  document.addEventListener("DOMContentLoaded", () => {
    $("#sign-out").addEventListener("click", () => signOut());
    renderSignIn();
  });
})();
