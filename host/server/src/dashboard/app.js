// The ferry dashboard: runs, a run's job graph, live logs, approvals and artifacts.
// Plain DOM, no framework and nothing fetched from elsewhere: the server embeds this file.
"use strict";

const main = document.getElementById("main");
let leave = () => {}; // Stops what the current page keeps running (timers, event streams).

function h(tag, attrs, ...children) {
  const el = document.createElement(tag);
  for (const [key, value] of Object.entries(attrs || {})) {
    if (value === undefined || value === null || value === false) continue;
    if (key.startsWith("on")) el.addEventListener(key.slice(2), value);
    else if (key === "class") el.className = value;
    else el.setAttribute(key, value === true ? "" : value);
  }
  for (const child of children.flat()) {
    if (child === null || child === undefined || child === false) continue;
    el.append(child instanceof Node ? child : document.createTextNode(String(child)));
  }
  return el;
}

class Unauthorized extends Error {}

// Only web addresses become links: a pipeline's `environment.url` is the pipeline
// author's text, and `javascript:` or `data:` there would run in the dashboard.
function webUrl(text) {
  try {
    return ["http:", "https:"].includes(new URL(text).protocol);
  } catch {
    return false;
  }
}

// A step's summary ($FERRY_STEP_SUMMARY) as elements: headings, paragraphs, lists, fenced
// code, tables, `code`, **bold** and [links](https://...). Built from text nodes only, so
// HTML in a summary shows as written and never becomes markup; only web addresses link.
function markdown(text) {
  const lines = text.split("\n");
  const row = /^\s*\|.*\|\s*$/;
  const item = /^\s*[-*+]\s+/;
  const blocks = [];
  let i = 0;
  while (i < lines.length) {
    const line = lines[i];
    const heading = /^(#{1,6})\s+(.*)$/.exec(line);
    if (line.startsWith("```")) {
      const code = [];
      for (i++; i < lines.length && !lines[i].startsWith("```"); i++) code.push(lines[i]);
      i++;
      blocks.push(h("pre", { class: "mono" }, code.join("\n")));
    } else if (heading) {
      blocks.push(h(`h${Math.min(6, heading[1].length + 2)}`, {}, inline(heading[2])));
      i++;
    } else if (row.test(line) && /^\s*(\|\s*)?:?-{3,}/.test(lines[i + 1] || "")) {
      const cells = (l) => l.trim().replace(/^\||\|$/g, "").split("|").map((c) => c.trim());
      const head = cells(line);
      const body = [];
      for (i += 2; i < lines.length && row.test(lines[i]); i++) body.push(cells(lines[i]));
      blocks.push(h("table", { class: "md" }, h("tr", {}, head.map((c) => h("th", {}, inline(c)))),
        body.map((r) => h("tr", {}, r.map((c) => h("td", {}, inline(c)))))));
    } else if (item.test(line)) {
      const items = [];
      for (; i < lines.length && item.test(lines[i]); i++) items.push(h("li", {}, inline(lines[i].replace(item, ""))));
      blocks.push(h("ul", {}, items));
    } else if (!line.trim()) {
      i++;
    } else {
      const para = [line];
      for (i++; i < lines.length && lines[i].trim() && !/^(#{1,6}\s|```)/.test(lines[i]) && !item.test(lines[i]) && !row.test(lines[i]); i++) para.push(lines[i]);
      blocks.push(h("p", {}, inline(para.join(" "))));
    }
  }
  return blocks;
}

// One pass, each character looked at a bounded number of times: a summary is the step's
// text, and a pattern that backtracks would let a line of `[` freeze the page.
function inline(text) {
  const out = [];
  let plain = 0;
  let i = 0;
  const emit = (end, node, next) => {
    out.push(text.slice(plain, end), node);
    plain = i = next;
  };
  while (i < text.length) {
    const c = text[i];
    if (c === "`") {
      const close = text.indexOf("`", i + 1);
      if (close > i + 1) { emit(i, h("code", {}, text.slice(i + 1, close)), close + 1); continue; }
      if (close < 0) break;
    } else if (c === "*" && text[i + 1] === "*") {
      const close = text.indexOf("**", i + 2);
      if (close > i + 2) { emit(i, h("strong", {}, text.slice(i + 2, close)), close + 2); continue; }
      if (close < 0) { i += 2; continue; }
    } else if (c === "[") {
      // `[label](url)`: neither part holds a `[`, so each scan stops at the next one.
      let j = i + 1;
      while (j < text.length && text[j] !== "[" && text[j] !== "]") j += 1;
      if (text[j] === "]" && text[j + 1] === "(" && j > i + 1) {
        let k = j + 2;
        while (k < text.length && text[k] !== ")" && text[k] !== "[" && !/\s/.test(text[k])) k += 1;
        if (text[k] === ")") {
          const url = text.slice(j + 2, k);
          emit(i, webUrl(url) ? h("a", { href: url, rel: "noopener noreferrer" }, text.slice(i + 1, j)) : text.slice(i, k + 1), k + 1);
          continue;
        }
      }
    }
    i += 1;
  }
  out.push(text.slice(plain));
  return out;
}

async function api(path, options = {}) {
  const init = { credentials: "same-origin", headers: {}, ...options };
  if (options.json !== undefined) {
    init.method = init.method || "POST";
    init.headers["Content-Type"] = "application/json";
    init.body = JSON.stringify(options.json);
  }
  const response = await fetch(path, init);
  if (response.status === 401) throw new Unauthorized();
  const text = await response.text();
  const body = text ? JSON.parse(text) : null;
  if (!response.ok) throw new Error((body && body.error) || response.statusText);
  return body;
}

// replaceChildren that skips absent parts instead of printing "null".
function fill(el, ...children) {
  el.replaceChildren(...children.flat().filter((c) => c !== null && c !== undefined && c !== false && c !== ""));
}

function badge(status) {
  return h("span", { class: `badge s-${status}`, "data-status": status }, status);
}

function duration(ms) {
  if (ms === null || ms === undefined) return "";
  if (ms < 1000) return `${Math.round(ms)} ms`;
  const s = ms / 1000;
  if (s < 60) return `${s.toFixed(1)} s`;
  const m = Math.floor(s / 60);
  return `${m}m ${Math.round(s - m * 60)}s`;
}

function ago(ms) {
  if (!ms) return "";
  const s = Math.max(0, (Date.now() - ms) / 1000);
  if (s < 60) return "just now";
  if (s < 3600) return `${Math.floor(s / 60)} min ago`;
  if (s < 86400) return `${Math.floor(s / 3600)} h ago`;
  return new Date(ms).toLocaleString();
}

function refName(run) {
  const r = run.reference || "";
  return r.replace(/^refs\/(heads|tags)\//, "");
}

function go(path) {
  history.pushState(null, "", path);
  route();
}

document.addEventListener("click", (e) => {
  const a = e.target.closest("a[data-nav]");
  if (!a || e.ctrlKey || e.metaKey || e.shiftKey) return;
  e.preventDefault();
  go(a.getAttribute("href"));
});
window.addEventListener("popstate", () => route());

async function route() {
  leave();
  leave = () => {};
  const m = location.pathname.match(/^\/runs\/(\d+)$/);
  try {
    if (m) await showRun(Number(m[1]));
    else await listRuns();
  } catch (e) {
    if (e instanceof Unauthorized) showLogin();
    else main.replaceChildren(h("div", { class: "panel error-box" }, String(e.message || e)));
  }
  whoami();
}

async function whoami() {
  const who = document.getElementById("who");
  try {
    const session = await api("/api/session");
    if (session.user) {
      fill(who, `signed in as ${session.user} · `,
        h("a", { href: "#", onclick: async (e) => { e.preventDefault(); await api("/api/session", { method: "DELETE", json: {} }); route(); } }, "sign out"));
    } else {
      fill(who, h("a", { href: "#", onclick: (e) => { e.preventDefault(); showLogin(); } }, "sign in"));
    }
  } catch (_) { fill(who, ); }
}

function showLogin() {
  leave();
  const error = h("div", { class: "muted" });
  const token = h("input", { type: "password", name: "token", placeholder: "API token", autocomplete: "current-password" });
  const user = h("input", { name: "user", placeholder: "user", autocomplete: "username" });
  const password = h("input", { type: "password", name: "password", placeholder: "password", autocomplete: "current-password" });
  const form = h("form", { class: "panel login", id: "login", onsubmit: async (e) => {
    e.preventDefault();
    const json = token.value ? { token: token.value } : { user: user.value, password: password.value };
    try {
      await api("/api/session", { json });
      route();
    } catch (err) { error.textContent = err.message || "wrong token or password"; }
  } },
  h("h1", {}, "Sign in"),
  h("p", { class: "muted" }, "With the server's API token, or a user name and password."),
  token, h("div", { class: "muted" }, "or"), user, password,
  h("button", { class: "primary", type: "submit" }, "Sign in"), error);
  main.replaceChildren(form);
}

// ------------------------------------------------------------------------------------
// Runs

async function listRuns() {
  document.title = "Runs · ferry";
  const body = h("tbody");
  const table = h("table", { class: "runs" },
    h("thead", {}, h("tr", {}, ["Run", "Status", "Commit", "Branch", "Trigger", "Duration", "Started"].map((c) => h("th", {}, c)))),
    body);
  const panel = h("div", { class: "panel" }, table);
  main.replaceChildren(h("h1", {}, "Runs"), h("p", { class: "muted" }, "Newest first; the page follows new runs as they come."), panel);
  async function refresh() {
    const runs = await api("/api/runs?limit=100");
    if (!runs.length) {
      panel.replaceChildren(h("div", { class: "empty" }, "No runs yet. Push a commit, or start one with `ferry trigger`."));
      return;
    }
    if (!panel.contains(table)) panel.replaceChildren(table);
    body.replaceChildren(...runs.map((run) => h("tr", { "data-run": run.id, onclick: () => go(`/runs/${run.id}`) },
      h("td", {}, h("a", { href: `/runs/${run.id}`, "data-nav": true }, `#${run.id}`)),
      h("td", {}, badge(run.status)),
      h("td", {}, h("div", { class: "message" }, run.message || ""), h("div", { class: "muted mono" }, `${run.repo} · ${run.sha.slice(0, 7)}`)),
      h("td", {}, h("span", { class: "ref" }, refName(run))),
      h("td", {}, run.trigger + (run.rerun_of ? ` (re-run of #${run.rerun_of})` : "")),
      h("td", {}, duration(run.duration_ms)),
      h("td", { class: "muted", title: new Date(run.created_at).toISOString() }, ago(run.started_at || run.created_at)))));
  }
  await refresh();
  const timer = setInterval(() => refresh().catch(() => {}), 3000);
  leave = () => clearInterval(timer);
}

// ------------------------------------------------------------------------------------
// One run

const ESC = String.fromCharCode(27);
const ANSI = new RegExp(ESC + "\\[([0-9;]*)m", "g");

// Renders a log line with its ANSI colours as spans (text only, never markup).
function ansi(text) {
  const out = [];
  let classes = [];
  let last = 0;
  const push = (s) => { if (s) out.push(classes.length ? h("span", { class: classes.join(" ") }, s) : document.createTextNode(s)); };
  text.replace(ANSI, (match, codes, offset) => {
    push(text.slice(last, offset));
    last = offset + match.length;
    for (const code of (codes || "0").split(";").map(Number)) {
      if (code === 0) classes = [];
      else if (code === 1) classes.push("a-bold");
      else if (code === 2) classes.push("a-dim");
      else if (code === 3) classes.push("a-italic");
      else if (code === 4) classes.push("a-underline");
      else if (code === 39) classes = classes.filter((c) => !c.startsWith("a-fg"));
      else if ((code >= 30 && code <= 37) || (code >= 90 && code <= 97)) {
        classes = classes.filter((c) => !c.startsWith("a-fg"));
        classes.push(`a-fg-${code}`);
      }
    }
    return match;
  });
  push(text.slice(last));
  // Other escape sequences (cursor moves) have no meaning in a log.
  return out.map((n) => { if (n.nodeType === 3) n.textContent = n.textContent.replace(new RegExp(ESC + "\\[[0-9;?]*[A-Za-z]", "g"), ""); return n; });
}

async function showRun(id) {
  const state = {
    id, run: null, job: null, step: null, followed: true, live: true,
    logs: new Map(), outputs: new Map(), source: null, refreshing: null,
  };
  const header = h("div", { class: "panel" });
  const banner = h("div");
  const graph = h("div", { class: "panel graph", id: "graph" });
  const steps = h("div", { class: "panel steps", id: "steps" });
  const logTitle = h("div", { class: "log-title" });
  const outputs = h("div");
  const log = h("div", { class: "log mono", id: "log" });
  const extras = h("div");
  main.replaceChildren(header, banner, graph,
    h("div", { class: "layout" }, steps, h("div", {}, logTitle, outputs, log)), extras);

  const key = (job, step) => `${job}/${step}`;

  function renderHeader() {
    const run = state.run;
    document.title = `#${run.id} ${run.status} · ferry`;
    const actions = h("div", { class: "actions" });
    if (run.status === "queued" || run.status === "running") {
      actions.append(h("button", { class: "danger", id: "cancel", onclick: () => act(`/api/runs/${id}/cancel`) }, "Cancel"));
    } else {
      actions.append(h("button", { id: "rerun", onclick: async () => {
        const made = await act(`/api/runs/${id}/rerun`);
        if (made && made.run) go(`/runs/${made.run}`);
      } }, "Re-run"));
    }
    fill(header, h("div", { class: "head" },
      h("div", { class: "grow" },
        h("h1", {}, `#${run.id} `, run.message || run.sha.slice(0, 7), " ", badge(run.status)),
        h("div", { class: "meta" },
          h("span", {}, run.repo),
          h("span", { class: "ref" }, refName(run)),
          h("span", { class: "mono" }, run.sha.slice(0, 12)),
          h("span", {}, run.author ? `by ${run.author}` : ""),
          h("span", {}, `${run.trigger}${run.rerun_of ? ` · re-run of #${run.rerun_of}` : ""}`),
          h("span", {}, run.duration_ms != null ? duration(run.duration_ms) : ago(run.created_at)))),
      actions),
    run.error ? h("div", { class: "error-box", id: "run-error" }, run.error) : null);
  }

  async function act(path, json) {
    try {
      const result = await api(path, { method: "POST", json: json === undefined ? {} : json });
      refresh();
      return result;
    } catch (e) {
      if (e instanceof Unauthorized) showLogin();
      else alert(e.message);
      return null;
    }
  }

  function renderBanner() {
    const pending = (state.run.approvals || []).filter((a) => a.approved === undefined || a.approved === null);
    fill(banner, ...pending.map((a) => h("div", { class: "panel approval", "data-job": a.job },
      h("strong", {}, a.job), ` waits for approval to deploy to `, h("span", { class: "ref" }, a.environment),
      h("span", { class: "grow" }),
      h("button", { class: "primary", "data-approve": a.job, onclick: () => act(`/api/runs/${id}/approve`, { job: a.job, approve: true }) }, "Approve"),
      h("button", { class: "danger", "data-reject": a.job, onclick: () => act(`/api/runs/${id}/approve`, { job: a.job, approve: false }) }, "Reject"))));
  }

  function renderGraph() {
    const jobs = state.run.jobs || [];
    const level = new Map();
    const depth = (job, seen = new Set()) => {
      if (level.has(job.job)) return level.get(job.job);
      if (seen.has(job.job)) return 0;
      seen.add(job.job);
      const d = Math.max(0, ...job.needs.map((n) => { const j = jobs.find((x) => x.job === n); return j ? depth(j, seen) + 1 : 0; }));
      level.set(job.job, d);
      return d;
    };
    jobs.forEach((j) => depth(j));
    const columns = [];
    for (const job of jobs) (columns[level.get(job.job)] ||= []).push(job);
    const waiting = new Set((state.run.approvals || []).filter((a) => a.approved == null).map((a) => a.job));
    const cards = new Map();
    const svg = document.createElementNS("http://www.w3.org/2000/svg", "svg");
    graph.replaceChildren(svg, ...columns.map((column) => h("div", { class: "column" }, column.map((job) => {
      const card = h("div", { class: `job${state.job === job.job ? " selected" : ""}`, "data-job": job.job, "data-status": job.status, onclick: () => { state.job = job.job; state.step = null; state.followed = false; render(); } },
        h("div", { class: "title" }, h("span", { class: `dot s-${waiting.has(job.job) ? "waiting" : job.status}` }), job.name,
          h("span", { class: "time" }, waiting.has(job.job) ? "waiting for approval" : duration(job.duration_ms))));
      cards.set(job.job, card);
      return card;
    }))));
    if (!jobs.length) graph.replaceChildren(h("div", { class: "muted" }, state.run.status === "queued" ? "Waiting for a free slot…" : "No jobs ran."));
    requestAnimationFrame(() => {
      const origin = graph.getBoundingClientRect();
      for (const job of jobs) {
        for (const need of job.needs) {
          const from = cards.get(need), to = cards.get(job.job);
          if (!from || !to) continue;
          const a = from.getBoundingClientRect(), b = to.getBoundingClientRect();
          const x1 = a.right - origin.left + graph.scrollLeft, y1 = a.top + a.height / 2 - origin.top;
          const x2 = b.left - origin.left + graph.scrollLeft, y2 = b.top + b.height / 2 - origin.top;
          const path = document.createElementNS("http://www.w3.org/2000/svg", "path");
          const mid = (x1 + x2) / 2;
          path.setAttribute("d", `M${x1},${y1} C${mid},${y1} ${mid},${y2} ${x2},${y2}`);
          svg.append(path);
        }
      }
    });
  }

  function selectDefaults() {
    const jobs = state.run.jobs || [];
    if (!jobs.length) return;
    if (state.followed) {
      const running = jobs.find((j) => j.status === "running");
      const failed = jobs.find((j) => j.status === "failed");
      state.job = (running || failed || (state.job && jobs.find((j) => j.job === state.job)) || jobs[0]).job;
    }
    const job = jobs.find((j) => j.job === state.job) || jobs[0];
    state.job = job.job;
    if (state.followed || !state.step) {
      const pick = job.steps.find((s) => s.status === "running") || job.steps.find((s) => s.status === "failed")
        || [...job.steps].reverse().find((s) => s.status !== "pending" && s.status !== "skipped") || job.steps[0];
      state.step = pick ? pick.key : null;
    }
  }

  function renderSteps() {
    const job = (state.run.jobs || []).find((j) => j.job === state.job);
    if (!job) { fill(steps, ); return; }
    fill(steps, h("div", { class: "step muted" }, h("strong", {}, job.name), job.message ? ` — ${job.message}` : ""),
      ...job.steps.map((step) => h("div", { class: `step${state.step === step.key ? " selected" : ""}`, "data-step": step.key, "data-status": step.status,
        onclick: () => { state.step = step.key; state.followed = false; render(); } },
      h("span", { class: `dot s-${step.status}` }), h("span", { class: "name", title: step.name }, step.name),
      step.cached ? h("span", { class: "cached" }, "cached") : null,
      h("span", { class: "time" }, duration(step.duration_ms)))));
  }

  function logLine(entry, n) {
    if (entry.group) return h("div", { class: "line group" }, h("span", { class: "n" }, n), `▸ ${entry.text}`);
    return h("div", { class: `line l-${entry.level}` }, h("span", { class: "n" }, n), ...ansi(entry.text));
  }

  let shown = null;
  function renderLog() {
    const job = (state.run.jobs || []).find((j) => j.job === state.job);
    const step = job && job.steps.find((s) => s.key === state.step);
    if (!step) { fill(logTitle); log.replaceChildren(); fill(outputs); shown = null; return; }
    const k = key(job.job, step.key);
    const lines = state.logs.get(k) || [];
    fill(logTitle, h("strong", {}, step.name), badge(step.status),
      state.live && step.status === "running" ? h("span", { class: "live", id: "live" }, "● live") : null,
      step.message ? h("span", { class: "muted" }, step.message) : null);
    const outs = state.outputs.get(k);
    // The `test` step's counts read as a summary; other outputs as a table.
    const tests = outs && outs.has("total") && outs.has("passed")
      ? h("div", { class: "tests", id: "tests" },
        h("strong", {}, `${outs.get("total")} tests`),
        ...["passed", "failed", "skipped", "flaky"].filter((n) => Number(outs.get(n)) > 0)
          .map((n) => h("span", { class: `badge s-${n === "flaky" ? "running" : n}` }, `${outs.get(n)} ${n}`)))
      : null;
    const table = outs && outs.size ? h("table", { class: "outputs" }, [...outs].map(([name, value]) => h("tr", {}, h("td", {}, name), h("td", { class: "mono" }, value)))) : null;
    fill(outputs, tests, table);
    if (shown !== k || log.childElementCount !== lines.length) {
      shown = k;
      log.replaceChildren(...lines.map((entry, i) => logLine(entry, i + 1)));
      if (!lines.length) log.append(h("div", { class: "line muted" }, step.status === "pending" ? "Not started." : "No output."));
      log.scrollTop = log.scrollHeight;
    }
  }

  function appendLog(k, entry) {
    if (!state.logs.has(k)) state.logs.set(k, []);
    const lines = state.logs.get(k);
    lines.push(entry);
    if (shown === k) {
      if (lines.length === 1) log.replaceChildren();
      const atBottom = log.scrollTop + log.clientHeight >= log.scrollHeight - 30;
      log.append(logLine(entry, lines.length));
      if (atBottom) log.scrollTop = log.scrollHeight;
    }
  }

  function renderExtras() {
    const run = state.run;
    const parts = [];
    if ((run.summaries || []).length) {
      parts.push(h("h2", {}, "Summaries"), h("div", { id: "summaries" }, run.summaries.map((s) =>
        h("div", { class: "panel summary", "data-summary": key(s.job, s.step) },
          h("div", { class: "mono muted" }, `${s.job} › ${s.step}`), markdown(s.markdown)))));
    }
    if ((run.annotations || []).length) {
      parts.push(h("h2", {}, "Annotations"), h("ul", { class: "panel list", id: "annotations" }, run.annotations.map((a) => {
        const at = a.annotation.file ? `${a.annotation.file}${a.annotation.line ? `:${a.annotation.line}` : ""}${a.annotation.column ? `:${a.annotation.column}` : ""}` : "";
        return h("li", {}, badge(a.annotation.level === "error" ? "failed" : a.annotation.level === "warn" ? "running" : "skipped"),
          h("span", { class: "mono muted" }, `${a.job}`), at ? h("span", { class: "mono" }, at) : null, a.annotation.message);
      })));
    }
    if ((run.deployments || []).length) {
      parts.push(h("h2", {}, "Deployments"), h("ul", { class: "panel list", id: "deployments" }, run.deployments.map((d) => h("li", {},
        badge(d.outcome === "deployed" ? "passed" : d.outcome === "failed" ? "failed" : "interrupted"),
        h("span", { class: "ref" }, d.environment), h("span", { class: "mono" }, d.version),
        d.outcome, d.url ? (webUrl(d.url) ? h("a", { href: d.url, rel: "noopener noreferrer" }, d.url) : h("span", { class: "mono" }, d.url)) : null,
        h("span", { class: "grow" }), h("span", { class: "muted" }, d.at)))));
    }
    if ((run.services || []).length) {
      parts.push(h("h2", {}, "Services"), h("ul", { class: "panel list", id: "services" }, run.services.map((s) => h("li", {},
        h("a", { href: `/api/runs/${id}/services/${encodeURIComponent(s.job)}/${encodeURIComponent(s.service)}`, "data-service": s.service, rel: "noopener" }, s.service),
        h("span", { class: "muted" }, `log of job ${s.job}, ${s.size} bytes`)))));
    }
    if ((run.artifacts || []).length) {
      parts.push(h("h2", {}, "Artifacts"), h("ul", { class: "panel list", id: "artifacts" }, run.artifacts.map((a) => h("li", {},
        h("a", { href: `/api/runs/${id}/artifacts/${encodeURIComponent(a.name)}`, download: `${a.name}.tar`, "data-artifact": a.name }, a.name),
        h("span", { class: "muted" }, `${a.files} file${a.files === 1 ? "" : "s"}, ${a.size} bytes, from ${a.job}`),
        h("span", { class: "grow" }),
        h("a", { href: "#", "data-files": a.name, onclick: async (e) => {
          e.preventDefault();
          const all = await api(`/api/runs/${id}/artifacts`);
          const found = all.find((x) => x.name === a.name);
          e.target.replaceWith(h("span", {}, ...found.files.map((f) => h("a", { class: "mono", href: `/api/runs/${id}/artifacts/${encodeURIComponent(a.name)}/${f.path.split("/").map(encodeURIComponent).join("/")}`, download: f.path.split("/").pop() }, `${f.path} `))));
        } }, "files")))));
    }
    fill(extras, ...parts);
  }

  function render() {
    selectDefaults();
    renderHeader();
    renderBanner();
    renderGraph();
    renderSteps();
    renderLog();
    renderExtras();
  }

  async function refresh() {
    clearTimeout(state.refreshing);
    state.refreshing = setTimeout(async () => {
      try {
        state.run = await api(`/api/runs/${id}`);
        render();
      } catch (_) {}
    }, 150);
  }

  state.run = await api(`/api/runs/${id}`);
  render();

  function connect() {
    const source = new EventSource(`/api/runs/${id}/events`);
    state.source = source;
    source.onmessage = (message) => {
      const event = JSON.parse(message.data);
      switch (event.type) {
        case "log":
          appendLog(key(event.job, event.step), { level: event.level, text: event.text });
          break;
        case "group-start":
          appendLog(key(event.job, event.step), { group: true, text: event.title });
          break;
        case "output": {
          const k = key(event.job, event.step);
          if (!state.outputs.has(k)) state.outputs.set(k, new Map());
          state.outputs.get(k).set(event.name, event.value);
          break;
        }
        case "step-started":
          if (state.followed) { state.job = event.job; state.step = event.step; }
          refresh();
          break;
        case "run-started": case "matrix-expanded": case "job-started": case "step-finished": case "job-finished":
        case "run-finished": case "approval": case "notice": case "summary":
          refresh();
          break;
      }
    };
    source.addEventListener("end", () => {
      source.close();
      state.live = false;
      refresh();
    });
    source.onerror = () => {
      // A restarted server or a dropped connection: start over, as the stream replays
      // everything the run said.
      source.close();
      if (state.live) {
        state.retry = setTimeout(() => { state.logs.clear(); state.outputs.clear(); connect(); }, 1000);
      }
    };
  }
  connect();
  leave = () => { state.live = false; if (state.source) state.source.close(); clearTimeout(state.retry); };
}

route();
