// The dashboard: hash routes, a fetch of the JSON API per view, redrawn every 5 s.
import { el, timeChart, graphChart } from "./charts.js";

const API = "/api/v1/";
const PERIODS = [["1h", 3600], ["6h", 21600], ["24h", 86400], ["7d", 604800], ["30d", 2592000]];
const main = document.getElementById("main");
const alerts = document.getElementById("alerts");
const updated = document.getElementById("updated");
const auto = document.getElementById("auto");
let timer = null;
let lastRoute = "";
let knownOpen = null;

// API tokens (when serve has some configured): kept in sessionStorage for this tab only and
// sent as `Authorization: Bearer`; a 401 shows the sign-in form.
const TOKEN_KEY = "qos-token";
const login = document.getElementById("login");
const tokenInput = document.getElementById("token");
const logout = document.getElementById("logout");
class AuthError extends Error {}

async function api(path) {
  const headers = { Accept: "application/json" };
  const token = sessionStorage.getItem(TOKEN_KEY);
  if (token) headers.Authorization = `Bearer ${token}`;
  const r = await fetch(API + path, { headers });
  const body = await r.json().catch(() => ({}));
  if (r.status === 401) throw new AuthError(body.reason ?? "a token is required");
  if (!r.ok) throw new Error(body.error ?? `HTTP ${r.status}`);
  return body;
}
// An endpoint that may be missing (404 without a model or a centre) gives `fallback`.
const maybe = (path, fallback) => api(path).catch((e) => { if (e instanceof AuthError) throw e; return fallback; });

const pct = (r, d = 2) => (r === null || r === undefined ? "–" : (100 * r).toFixed(d) + " %");
const ms = (us) => (us === null || us === undefined ? "–" : (us / 1000).toFixed(us < 10000 ? 2 : 1) + " ms");
const when = (t) => (t ? new Date(t > 1e11 ? t : t * 1000).toLocaleString() : "–");
const ago = (msAgo) => (msAgo === null || msAgo === undefined ? "–" : msAgo < 60000 ? `${Math.round(msAgo / 1000)} s ago` : msAgo < 3600000 ? `${Math.round(msAgo / 60000)} min ago` : `${(msAgo / 3600000).toFixed(1)} h ago`);
const badge = (status) => el("span", { class: `badge ${status ?? "unknown"}`, text: status ?? "unknown" });
const enc = encodeURIComponent;

function table(caption, head, rows, attrs = {}) {
  return el("table", attrs, el("caption", { text: caption }),
    el("thead", {}, el("tr", {}, head.map((h) => el("th", { scope: "col", class: h.num ? "num" : null, text: h.num ? h.t : h })))),
    el("tbody", {}, rows.map((r) => el("tr", {}, r.map((c, i) => el("td", { class: head[i]?.num ? "num" : null }, c ?? "–"))))));
}
const num = (t) => ({ t, num: true });

function parseHash() {
  const h = location.hash.replace(/^#\/?/, "");
  const [path, query = ""] = h.split("?");
  const parts = path.split("/").filter(Boolean).map(decodeURIComponent);
  return { parts: parts.length ? parts : ["map"], params: new URLSearchParams(query) };
}

// The top cause of each open incident, by component name.
function topCauses(incidents) {
  const out = new Map();
  for (const i of incidents) {
    const c = i.causes?.[0];
    if (c?.component) out.set(c.component, i);
  }
  return out;
}

async function viewMap() {
  const [topo, open] = await Promise.all([maybe("topology", {}), maybe("incidents?open=true", { incidents: [] })]);
  const sm = topo.service_map ?? { services: [], components: [], links: [] };
  const causes = topCauses(open.incidents);
  const nodes = [
    ...sm.services.map((s) => ({ id: s.id, label: s.name, kind: "service", status: s.status ?? "unknown", href: `/service/${enc(s.name)}` })),
    ...sm.components.map((c) => {
      const inc = causes.get(c.name);
      return { id: c.id, label: c.name, kind: c.kind, region: c.region, cause: !!inc,
        status: c.down || inc ? "down" : "ok", href: inc ? `/incident/${inc.id}` : null };
    }),
  ];
  const out = [el("h2", { text: "Service map" })];
  if (!nodes.length) out.push(el("p", { text: "No service model loaded ([model] file in the configuration, or PUT /api/v1/model)." }));
  else {
    out.push(el("p", { class: "legend" }, ["ok", "degraded", "down", "unknown"].map((s) => el("span", {}, badge(s))), " Dashed outline: suspected root cause of an open incident. Select a service for its drill-down."));
    out.push(graphChart({ title: "Services and the components they depend on, by region", nodes, links: sm.links }));
  }
  if (open.incidents.length) {
    out.push(el("h3", { text: "Open incidents" }), el("ul", {}, open.incidents.map((i) =>
      el("li", {}, el("a", { href: `#/incident/${i.id}`, text: `#${i.id} ${i.subject?.name ?? ""}` }), ` — top cause: ${i.causes?.[0]?.component ?? "unknown"}`))));
  }
  return out;
}

async function viewServices() {
  const v = await api("services");
  return [el("h2", { text: "Services" }), el("p", { class: "muted", text: `Last ${Math.round(v.window_s / 60)} min.` }),
    table("Services", ["service", "status", num("availability"), num("p95")], v.services.map((s) => [
      el("a", { href: `#/service/${enc(s.name)}`, text: s.name }), badge(s.status), pct(s.availability), ms(s.p95_us)]))];
}

function periodPicker(base, current) {
  return el("div", { class: "picker", role: "group", "aria-label": "Period" }, PERIODS.map(([name]) =>
    el("button", { type: "button", "aria-pressed": String(name === current), text: name, onclick: () => { location.hash = `${base}?period=${name}`; } })));
}

async function viewService(name, params) {
  const period = PERIODS.find(([p]) => p === params.get("period")) ?? PERIODS[0];
  const to = Math.floor(Date.now() / 1000), from = to - period[1];
  const step = Math.max(60, Math.ceil(period[1] / 120 / 60) * 60);
  const q = `from=${from}&to=${to}`;
  const [svc, series] = await Promise.all([api(`services/${enc(name)}?${q}`), api(`services/${enc(name)}/series?${q}&step=${step}`)]);
  const regional = await Promise.all((svc.regions ?? []).map((r) => maybe(`services/${enc(name)}/series?${q}&step=${step}&region=${enc(r)}`, null)));
  const pts = series.points, times = pts.map((p) => p.t);
  const phaseNames = [...new Set(pts.flatMap((p) => Object.keys(p.phases ?? {})))].filter((p) => p !== "total");
  const out = [el("h2", {}, `Service ${name} `, badge(svc.state?.status)), periodPicker(`#/service/${enc(name)}`, period[0])];
  const rep = svc.report ?? {};
  out.push(el("div", { class: "cards" },
    el("div", { class: "card" }, el("h3", { text: "Availability" }), el("p", { text: pct(rep.availability?.ratio, 3) })),
    el("div", { class: "card" }, el("h3", { text: "Error budget (availability)" }), el("p", { text: pct(svc.budget?.availability?.remaining_ratio, 1) + " remaining" })),
    el("div", { class: "card" }, el("h3", { text: "Regions" }), el("p", { text: (svc.regions ?? []).join(", ") || "–" }))));
  if (phaseNames.length) out.push(timeChart({ title: "Response time by phase (mean, stacked)", times, stacked: true, unit: " ms", fmt: (v) => +v.toFixed(1),
    series: phaseNames.map((p) => ({ name: p, values: pts.map((x) => (x.phases?.[p]?.mean_us ?? null) === null ? null : x.phases[p].mean_us / 1000) })) }));
  out.push(timeChart({ title: "Total time percentiles", times, unit: " ms", fmt: (v) => +v.toFixed(1),
    series: ["p50", "p95", "p99"].map((k) => ({ name: k, values: pts.map((x) => (x[`${k}_us`] ?? null) === null ? null : x[`${k}_us`] / 1000) })) }));
  out.push(timeChart({ title: "Availability (good windows)", times, max: 100, unit: " %", fmt: (v) => +v.toFixed(1),
    series: [{ name: "all regions", values: pts.map((x) => (x.availability ?? null) === null ? null : 100 * x.availability) },
      ...regional.filter(Boolean).map((s) => ({ name: s.region, values: s.points.map((x) => (x.availability ?? null) === null ? null : 100 * x.availability) }))] }));
  out.push(el("h3", { text: "Per region" }), table("Per region over the period", ["region", num("availability"), num("runs"), num("failures"), "errors"],
    (rep.regions ?? []).map((g) => [g.region, pct(g.availability?.ratio), String(g.runs), String(g.failures), g.errors.map((e) => `${e.class} ${e.count}`).join(", ")])));
  out.push(el("h3", { text: "Burn rates" }), table("Burn rates of the alert rules", ["SLI", "severity", num("long window"), num("long burn"), num("short window"), num("short burn")],
    (svc.burn_rates ?? []).map((b) => [b.sli, b.severity, `${b.long_s / 60} min`, fixed(b.long_burn), `${b.short_s / 60} min`, fixed(b.short_burn)])));
  return out;
}
const fixed = (v, d = 2) => (v === null || v === undefined ? "–" : Number(v).toFixed(d));

async function viewIncidents() {
  const v = await api("incidents?limit=100");
  return [el("h2", { text: "Incidents" }), table("Incidents, newest first", ["id", "subject", "state", "opened", "closed", "top cause", num("score")],
    v.incidents.map((i) => [el("a", { href: `#/incident/${i.id}`, text: `#${i.id}` }), i.subject?.name, i.resolved_at ? "resolved" : "open",
      when(i.opened_at), when(i.resolved_at), i.causes?.[0]?.component, fixed(i.causes?.[0]?.score)]))];
}

function seriesChart(s) {
  const pts = s.points ?? [];
  const title = `${s.component} ${s.metric}`;
  if (!pts.length) return el("p", { class: "muted", text: `${title}: no points stored around the incident.` });
  return timeChart({ title, times: pts.map((p) => p[0]), width: 300, height: 120, fmt: (v) => +Number(v).toPrecision(3),
    series: [{ name: s.metric, values: pts.map((p) => p[1]) }] });
}

async function viewIncident(id) {
  const i = await api(`incidents/${enc(id)}`);
  const out = [el("h2", {}, `Incident #${i.id} — ${i.subject?.name ?? ""} `, badge(i.resolved_at ? "ok" : "down")),
    el("p", { text: `Opened ${when(i.opened_at)}${i.resolved_at ? `, resolved ${when(i.resolved_at)}` : ", open"}; worst state ${i.worst}; degraded regions: ${(i.degraded_regions ?? []).join(", ") || "none"}; phases: ${(i.phases ?? []).map((p) => `${p.phase} (${fixed(p.weight)})`).join(", ") || "–"}.` })];
  out.push(el("h3", { text: "Ranked causes" }), el("ol", { class: "causes" }, (i.causes ?? []).map((c) =>
    el("li", {}, el("strong", { class: "cause-name", text: c.component }), ` (${c.kind}${c.region ? ", " + c.region : ""}) — score ${fixed(c.score)}${c.metric ? ", metric " + c.metric : ""}`,
      c.evidence?.length ? el("ul", {}, c.evidence.map((e) => el("li", { text: String(e) }))) : null))));
  const steps = i.drill_down ?? [];
  if (steps.length) {
    out.push(el("h3", { text: "Drill-down" }), el("div", { class: "chain" }, steps.map((s, n) =>
      el("section", { class: "card", "aria-label": `Step ${n + 1}: ${s.level}` },
        el("h4", { text: `${n + 1}. ${s.level}: ${s.name}` }),
        s.detail ? el("p", { class: "muted", text: s.detail }) : null,
        (s.series ?? []).map(seriesChart)))));
  }
  return out;
}

async function viewInfra() {
  const now = Date.now();
  const [edges, brokers] = await Promise.all([api("edges"), maybe("brokers", { brokers: [] })]);
  const out = [el("h2", { text: "Sub-managers and brokers" })];
  out.push(table("Edges (sub-managers)", ["id", "name", "region", "state", "connects via", "last seen", num("received"), num("gaps"), num("dropped at edge")],
    edges.edges.map((e) => [String(e.id), e.name, e.region, badge(e.up ? "ok" : "down"), e.broker ?? "–", ago(now - e.last_seen),
      String(e.received), String(e.gaps), String(e.dropped_at_edge)]), { id: "edges-table" }));
  out.push(table("Brokers", ["address", "edges", "last batch", num("batches"), num("backlog"), num("dropped (quota)"), num("forwarded")],
    brokers.brokers.map((b) => [b.address, b.edges.join(", "), when(b.last_batch), String(b.batches),
      b.report ? `${b.report.queued} (${b.report.queued_bytes} B)` : "–", b.report ? String(b.report.dropped_quota) : "–", b.report ? String(b.report.forwarded) : "–"]), { id: "brokers-table" }));
  if (!brokers.brokers.length) out.push(el("p", { class: "muted", text: "No broker has reported or forwarded batches." }));
  // Edge → broker → super-manager, or edge → super-manager for edges that talk to it directly.
  const nodes = [{ id: "sm", label: "super-manager", kind: "super-manager", status: "ok" },
    ...brokers.brokers.map((b) => ({ id: `b:${b.address}`, label: b.address, kind: "broker", status: "ok" })),
    ...edges.edges.map((e) => ({ id: `e:${e.id}`, label: e.name ?? `edge ${e.id}`, kind: `edge ${e.id}`, region: e.region, status: e.up ? "ok" : "down" }))];
  const links = [...brokers.brokers.map((b) => ({ from: `b:${b.address}`, to: "sm" })),
    ...edges.edges.map((e) => ({ from: `e:${e.id}`, to: e.broker && e.broker !== "direct" && brokers.brokers.some((b) => b.address === e.broker) ? `b:${e.broker}` : "sm" }))];
  out.push(graphChart({ title: "Who connects to whom (edges, brokers, super-manager)", nodes, links }));
  return out;
}

async function viewSlos() {
  const v = await api("slos");
  const out = [el("h2", { text: "Service level objectives" })];
  for (const s of v.slos) {
    const rows = ["availability", "latency"].filter((k) => s.budget?.[k]).map((k) => {
      const b = s.budget[k];
      const left = Math.max(0, Math.min(1, b.remaining_ratio ?? 0));
      return [k, String(b.target), pct(b.sli, 3), el("span", {}, el("span", { class: "bar", role: "img", "aria-label": pct(b.remaining_ratio, 1) },
        el("i", { style: `width:${(100 * left).toFixed(1)}%;background:var(--${left > 0.25 ? "ok" : left > 0 ? "degraded" : "down"})` })), " ", el("span", { class: "budget", text: pct(b.remaining_ratio, 1) })),
        fixed(b.consumed, 2)];
    });
    out.push(el("section", { "aria-label": `SLO of ${s.service}` }, el("h3", {}, el("a", { href: `#/service/${enc(s.service)}`, text: s.service })),
      table(`Objectives of ${s.service}`, ["SLI", "target", num("measured"), "budget remaining", num("consumed")], rows, { class: "slo-table" }),
      s.alerts?.length ? el("p", { class: "alerts" }, `Active alerts: ${s.alerts.map((a) => `${a.severity ?? ""} ${a.sli ?? ""}`).join("; ")}`) : el("p", { class: "muted", text: "No active burn-rate alert." })));
  }
  if (!v.slos.length) out.push(el("p", { text: "No objectives in the model." }));
  return out;
}

const ROUTES = {
  map: viewMap, services: viewServices, incidents: viewIncidents, infra: viewInfra, slos: viewSlos,
  service: (p, q) => viewService(p[1], q), incident: (p) => viewIncident(p[1]),
};

async function watchIncidents() {
  const open = await maybe("incidents?open=true", null);
  if (!open) return;
  const ids = open.incidents.map((i) => i.id).join(",");
  if (ids === knownOpen) return;
  knownOpen = ids;
  alerts.replaceChildren(...(open.incidents.length ? [el("strong", { text: `${open.incidents.length} open incident${open.incidents.length > 1 ? "s" : ""}: ` }),
    ...open.incidents.flatMap((i, n) => [n ? ", " : "", el("a", { href: `#/incident/${i.id}`, text: `#${i.id} ${i.subject?.name ?? ""} (top cause ${i.causes?.[0]?.component ?? "unknown"})` })])] : []));
}

async function render() {
  const { parts, params } = parseHash();
  const route = location.hash;
  const view = ROUTES[parts[0]] ?? viewMap;
  for (const a of document.querySelectorAll("nav a")) {
    const on = a.getAttribute("href").slice(2) === parts[0] || (parts[0] === "service" && a.hash === "#/services") || (parts[0] === "incident" && a.hash === "#/incidents");
    if (on) a.setAttribute("aria-current", "page"); else a.removeAttribute("aria-current");
  }
  try {
    const [content] = await Promise.all([view(parts, params), watchIncidents()]);
    if (route !== location.hash) return;
    // Keep the open data tables open across refreshes.
    const shown = [...main.querySelectorAll(".sr-table.shown")].map((t) => t.querySelector("caption")?.textContent);
    main.replaceChildren(...content);
    for (const t of main.querySelectorAll(".sr-table")) if (shown.includes(t.querySelector("caption")?.textContent)) t.previousElementSibling?.click();
    updated.textContent = `updated ${new Date().toLocaleTimeString()}`;
    document.title = `${main.querySelector("h2")?.textContent ?? "QoS"} — QoS dashboard`;
    if (route !== lastRoute) { lastRoute = route; main.focus(); }
    login.hidden = true;
    logout.hidden = !sessionStorage.getItem(TOKEN_KEY);
  } catch (e) {
    if (e instanceof AuthError) {
      const first = login.hidden;
      login.hidden = false;
      logout.hidden = true;
      main.replaceChildren(el("h2", { text: "Sign in" }), el("p", { role: "alert", text: `An API token is needed (${e.message}): enter it above.` }));
      if (first) tokenInput.focus();
    } else {
      main.replaceChildren(el("h2", { text: "Error" }), el("p", { role: "alert", text: `Could not load this view: ${e.message}` }));
    }
  }
  main.setAttribute("data-ready", "1");
}

function schedule() {
  clearTimeout(timer);
  if (auto.checked) timer = setTimeout(() => render().finally(schedule), 5000);
}
addEventListener("hashchange", () => render().finally(schedule));
auto.addEventListener("change", schedule);
login.addEventListener("submit", (ev) => {
  ev.preventDefault();
  sessionStorage.setItem(TOKEN_KEY, tokenInput.value.trim());
  tokenInput.value = "";
  render().finally(schedule);
});
logout.addEventListener("click", () => { sessionStorage.removeItem(TOKEN_KEY); render().finally(schedule); });
render().finally(schedule);
