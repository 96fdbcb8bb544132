// Shotline operations console. No framework, no CDN: everything here ships with dispatch.
// The live feed is Server-Sent Events read with fetch (EventSource cannot send the bearer
// token); on a drop it reconnects after a second with Last-Event-ID and catches up.
"use strict";
(() => {
  const $ = (sel) => document.querySelector(sel);
  const esc = (v) => String(v ?? "").replace(/[&<>"']/g, (c) => ({"&": "&amp;", "<": "&lt;", ">": "&gt;", '"': "&quot;", "'": "&#39;"}[c]));
  const state = { incidents: new Map(), lastId: null, layers: null, selected: null, token: sessionStorage.getItem("shotline-token") };
  // (incident_id, version, shown at ms) of every version drawn: read by tests and bench/console.py
  window.shotlineShown = [];

  const api = async (path, options = {}) => {
    const response = await fetch(path, { ...options, headers: { authorization: `Bearer ${state.token}`, "content-type": "application/json", ...(options.headers || {}) } });
    if (response.status === 401) { logout(); throw new Error("unauthorised"); }
    const body = response.headers.get("content-type")?.includes("json") ? await response.json() : await response.text();
    if (!response.ok) throw new Error(typeof body === "string" ? body : JSON.stringify(body.detail ?? body));
    return body;
  };
  const time = (iso) => iso ? new Date(iso).toLocaleTimeString([], { hour12: false }) : "—";
  const when = (iso) => iso ? new Date(iso).toLocaleString([], { hour12: false }) : "—";

  function logout() { sessionStorage.removeItem("shotline-token"); state.token = null; $("#login").hidden = false; }
  $("#login").addEventListener("submit", (e) => {
    e.preventDefault(); state.token = $("#token").value.trim(); sessionStorage.setItem("shotline-token", state.token);
    $("#login").hidden = true; start();
  });

  // ---- live feed -----------------------------------------------------------------------
  async function follow() {
    for (;;) {
      try {
        const headers = { authorization: `Bearer ${state.token}` };
        if (state.lastId !== null) headers["last-event-id"] = String(state.lastId);
        const response = await fetch("/v1/console/feed", { headers });
        if (response.status === 401) { logout(); return; }
        if (!response.ok || !response.body) throw new Error(`feed ${response.status}`);
        setFeed(true);
        const reader = response.body.pipeThrough(new TextDecoderStream()).getReader();
        let buffer = "";
        for (;;) {
          const { value, done } = await reader.read();
          if (done) break;
          buffer += value;
          let cut;
          while ((cut = buffer.indexOf("\n\n")) >= 0) {
            const block = buffer.slice(0, cut); buffer = buffer.slice(cut + 2);
            let id = null, data = null;
            for (const line of block.split("\n")) {
              if (line.startsWith("id: ")) id = Number(line.slice(4));
              else if (line.startsWith("data: ")) data = line.slice(6);
            }
            if (data !== null) receive(JSON.parse(data), id);
          }
        }
      } catch (err) { console.warn("feed:", err.message); }
      setFeed(false);
      await new Promise((r) => setTimeout(r, 1000));
    }
  }
  function setFeed(on) { const el = $("#feed-state"); el.textContent = on ? "live" : "reconnecting"; el.className = `state ${on ? "on" : "off"}`; }

  function receive(event, id) {
    if (id !== null) state.lastId = Math.max(state.lastId ?? 0, id);
    const inc = event.incident, known = state.incidents.get(inc.incident_id);
    if (known && known.incident.version >= inc.version) return;
    state.incidents.set(inc.incident_id, event);
    scheduleDraw(inc.incident_id, inc.version);
    if (state.selected === inc.incident_id) showIncident(inc.incident_id);
  }
  let pending = [], drawQueued = false;
  function scheduleDraw(incidentId, version) {
    pending.push([incidentId, version]);
    if (drawQueued) return;
    drawQueued = true;
    requestAnimationFrame(() => {
      drawQueued = false; drawList(); drawMap();
      const now = Date.now();
      for (const [i, v] of pending) window.shotlineShown.push([i, v, now]);
      pending = [];
    });
  }

  // ---- list ------------------------------------------------------------------------------
  function badges(ev) {
    const inc = ev.incident, out = [];
    if (inc.event === "cancelled") out.push(`<span class="badge cancelled">cancelled</span>`);
    if (inc.review) out.push(`<span class="badge ${inc.review.status}">${inc.review.status}${inc.review.late ? " (late)" : ""}</span>`);
    else if (ev.review_pending) out.push(`<span class="badge review">review</span>`);
    if (ev.silenced) out.push(`<span class="badge silenced">silenced</span>`);
    return out.join("");
  }
  function drawList() {
    const items = [...state.incidents.values()].sort((a, b) => b.incident.shot_time.localeCompare(a.incident.shot_time)).slice(0, 150);
    $("#incidents").innerHTML = items.map((ev) => {
      const inc = ev.incident;
      return `<li data-incident-id="${esc(inc.incident_id)}" data-version="${inc.version}" class="${state.selected === inc.incident_id ? "selected" : ""}">
        <span class="cls ${esc(inc.classification)}">${esc(inc.classification.replace("_", " "))}</span>
        ${Math.round(inc.gunfire_probability * 100)} % · ${inc.rounds} round${inc.rounds > 1 ? "s" : ""}${badges(ev)}
        <div class="meta">${time(inc.shot_time)} · ${esc(inc.zone)} · ±${Math.round(inc.location.radius95_m)} m · v${inc.version}</div></li>`;
    }).join("");
    $("#queue-count").textContent = items.filter((ev) => ev.review_pending && !ev.incident.review && ev.incident.event !== "cancelled").length;
  }
  $("#incidents").addEventListener("click", (e) => {
    const li = e.target.closest("li[data-incident-id]");
    if (li) location.hash = `#incident/${encodeURIComponent(li.dataset.incidentId)}`;
  });

  // ---- map: Web Mercator pixels at a zoom that fits; tiles only when a URL is configured ----
  const TILE = 256;
  const project = (lon, lat, z) => {
    const s = TILE * 2 ** z, sin = Math.sin((lat * Math.PI) / 180);
    return [((lon + 180) / 360) * s, (0.5 - Math.log((1 + sin) / (1 - sin)) / (4 * Math.PI)) * s];
  };
  function ringsOf(geo) { return geo.type === "Polygon" ? [geo.coordinates] : geo.type === "MultiPolygon" ? geo.coordinates : []; }
  function drawMap() {
    const svg = $("#map"), box = svg.getBoundingClientRect(), W = box.width || 800, H = box.height || 600;
    const L = state.layers || { sensors: [], geofences: [], silences: [] };
    const pts = [...L.sensors.map((s) => [s.lon, s.lat]), ...[...state.incidents.values()].slice(-200).map((e) => [e.incident.location.lon, e.incident.location.lat])];
    for (const g of [...L.geofences.map((f) => f.geofence), ...L.silences.map((s) => s.area)]) for (const poly of ringsOf(g)) for (const p of poly[0]) pts.push(p);
    if (!pts.length) { svg.innerHTML = `<text x="20" y="40" fill="#8b9bab">No sensors, geofences or incidents yet</text>`; return; }
    let minX = Infinity, minY = Infinity, maxX = -Infinity, maxY = -Infinity;
    for (const [lon, lat] of pts) { const [x, y] = project(lon, lat, 0); minX = Math.min(minX, x); maxX = Math.max(maxX, x); minY = Math.min(minY, y); maxY = Math.max(maxY, y); }
    const span = Math.max(maxX - minX, maxY - minY, 1e-7);
    // tiles exist at whole zoom levels only; the plane takes the scale that fits exactly
    const fit = Math.max(0, Math.min(19, Math.log2((0.85 * Math.min(W, H)) / span)));
    const z = L.tile_url ? Math.floor(fit) : fit;
    const k = 2 ** z, ox = ((minX + maxX) / 2) * k - W / 2, oy = ((minY + maxY) / 2) * k - H / 2;
    const xy = (lon, lat) => { const [x, y] = project(lon, lat, z); return [x - ox, y - oy]; };
    const parts = [];
    if (L.tile_url) {
      for (let tx = Math.floor(ox / TILE); tx <= Math.floor((ox + W) / TILE); tx++)
        for (let ty = Math.floor(oy / TILE); ty <= Math.floor((oy + H) / TILE); ty++)
          parts.push(`<image href="${esc(L.tile_url.replace("{z}", z).replace("{x}", tx).replace("{y}", ty))}" x="${tx * TILE - ox}" y="${ty * TILE - oy}" width="${TILE}" height="${TILE}" opacity="0.55"/>`);
    } else {
      parts.push(`<rect width="${W}" height="${H}" fill="#0e141b"/>`); // the scaled plane
    }
    const path = (geo) => ringsOf(geo).map((poly) => poly.map((ring) => "M" + ring.map(([lon, lat]) => xy(lon, lat).map((v) => v.toFixed(1)).join(",")).join("L") + "Z").join("")).join("");
    for (const f of L.geofences) parts.push(`<path d="${path(f.geofence)}" fill="none" stroke="#3fb950" stroke-width="2" stroke-dasharray="6 4"><title>${esc(f.name)} (${esc(f.review)} review)</title></path>`);
    for (const s of L.silences) parts.push(`<path d="${path(s.area)}" fill="#6cb6ff33" stroke="#6cb6ff"><title>silence: ${esc(s.reason)} (${esc(s.author)})</title></path>`);
    const selected = state.selected && state.incidents.get(state.selected);
    const usedBySelected = new Set(selected ? selected.incident.sensors_used : []);
    for (const s of L.sensors) {
      const [x, y] = xy(s.lon, s.lat), used = usedBySelected.has(s.sensor_id);
      parts.push(`<rect class="sensor" data-sensor-id="${esc(s.sensor_id)}" x="${x - 5}" y="${y - 5}" width="10" height="10" fill="${used ? "#ffb347" : s.status === "active" ? "#c9d1d9" : "#555"}"><title>${esc(s.sensor_id)}</title></rect>`);
    }
    const colour = { gunfire: "#ff5b5b", probable_gunfire: "#ffb347", fireworks: "#6cb6ff", other: "#a0a0a0" };
    // the newest 150 incidents (a floor's working picture; older ones are on the list pages)
    for (const ev of [...state.incidents.values()].slice(-150)) {
      const inc = ev.incident, [x, y] = xy(inc.location.lon, inc.location.lat);
      const mpp = (156543.03 * Math.cos((inc.location.lat * Math.PI) / 180)) / k;
      const r = Math.max(3, inc.location.radius95_m / mpp), c = colour[inc.classification] || "#fff";
      const dim = inc.event === "cancelled" || ev.silenced ? ' stroke-dasharray="3 3" opacity="0.6"' : "";
      if (selected && selected.incident.incident_id === inc.incident_id)
        for (const sid of inc.sensors_used) { const s = L.sensors.find((q) => q.sensor_id === sid); if (s) { const [sx, sy] = xy(s.lon, s.lat); parts.push(`<line x1="${x}" y1="${y}" x2="${sx}" y2="${sy}" stroke="#ffb347" stroke-width="1"/>`); } }
      parts.push(`<g class="incident" data-incident-id="${esc(inc.incident_id)}"${dim}><circle cx="${x}" cy="${y}" r="${r}" fill="${c}22" stroke="${c}" stroke-width="2"/><circle cx="${x}" cy="${y}" r="3" fill="${c}"/><title>${esc(inc.classification)} ±${Math.round(inc.location.radius95_m)} m</title></g>`);
    }
    const mppMid = (156543.03 * Math.cos((pts[0][1] * Math.PI) / 180)) / k, bar = 10 ** Math.floor(Math.log10(mppMid * 150));
    parts.push(`<g transform="translate(16 ${H - 20})"><line x2="${bar / mppMid}" stroke="#e6edf3" stroke-width="3"/><text y="-6" fill="#e6edf3" font-size="12">${bar >= 1000 ? bar / 1000 + " km" : bar + " m"}</text></g>`);
    svg.setAttribute("viewBox", `0 0 ${W} ${H}`);
    svg.innerHTML = parts.join("");
  }
  $("#map").addEventListener("click", (e) => { const g = e.target.closest("g.incident"); if (g) location.hash = `#incident/${encodeURIComponent(g.dataset.incidentId)}`; });
  addEventListener("resize", () => drawMap());

  // ---- pages -----------------------------------------------------------------------------
  function page(name) { for (const id of ["live", "detail", "reviews", "sensors"]) $(`#${id}`).hidden = id !== name; }
  async function route() {
    const hash = decodeURIComponent(location.hash.slice(1));
    if (hash.startsWith("incident/")) { state.selected = hash.slice(9); page("detail"); await showIncident(state.selected); }
    else if (hash === "reviews") { state.selected = null; page("reviews"); await showReviews(); }
    else if (hash === "sensors") { state.selected = null; page("sensors"); await showSensors(); }
    else { state.selected = null; page("live"); drawList(); drawMap(); }
  }
  addEventListener("hashchange", route);

  async function showIncident(id) {
    const d = await api(`/v1/console/incidents/${encodeURIComponent(id)}`), rec = d.record, q = d.review_queue;
    const decidable = rec.event !== "cancelled";
    const versions = d.versions.map((v) => { const r = v.record; return `<tr><td>v${v.version}</td><td>${esc(v.event)}</td><td><span class="cls ${esc(r.classification)}">${esc(r.classification)}</span></td><td>${r.gunfire_probability.toFixed(2)}</td><td>${r.rounds}</td><td>${r.location.lat.toFixed(5)}, ${r.location.lon.toFixed(5)} ±${Math.round(r.location.radius95_m)} m</td><td>${r.review ? `${esc(r.review.status)}${r.review.late ? " (late)" : ""} by ${esc(r.review.reviewed_by)}: ${esc(r.review.reason)}` : "machine"}</td><td>${when(v.consumed_at)}</td></tr>`; }).join("");
    const deliveries = d.deliveries.map((x) => `<tr data-delivery-id="${x.delivery_id}"><td>${esc(x.subscription_name || x.subscription_id)}</td><td>v${x.version}</td><td>${esc(x.event)}</td><td class="status">${esc(x.status)}</td><td>${(x.attempt_log || []).map((a) => `#${a.attempt_no} ${esc(a.outcome)} ${a.status_code ?? esc(a.error ?? "")} at ${time(a.finished_at || a.started_at)}`).join("<br>") || "—"}</td></tr>`).join("");
    const outcomes = d.outcomes.map((o) => `<tr><td>${when(o.recorded_at || o.created_at)}</td><td>${o.units_dispatched}</td><td>${esc((o.evidence || []).join(", "))}</td><td>${o.call_911 ? "yes" : "no"}</td><td>${esc(o.disposition)}</td></tr>`).join("");
    $("#detail").innerHTML = `<p><a href="#">← live</a></p>
      <h2>Incident ${esc(rec.incident_id)} <span class="cls ${esc(rec.classification)}">${esc(rec.classification)}</span>${badges({ incident: rec, review_pending: q && !q.decided_at, silenced: d.silence_holds.some((h) => !h.released_at) })}</h2>
      <p class="meta">shot ${when(rec.shot_time)} · zone ${esc(rec.zone)} · sensors ${esc(rec.sensors_used.join(", "))}${rec.sensors_rejected.length ? ` (rejected: ${esc(rec.sensors_rejected.join(", "))})` : ""}
      ${q ? ` · review deadline ${time(q.deadline_at)}${q.decided_at ? `, decided ${esc(q.decision)} by ${esc(q.reviewed_by || "")}${q.late ? " (late)" : ""}` : ""}` : ""}</p>
      ${d.same_shot_as.length ? `<p>Same shot as: ${d.same_shot_as.map((s) => `<a href="#incident/${encodeURIComponent(s)}">${esc(s)}</a>`).join(", ")}</p>` : ""}
      ${d.silence_holds.length ? `<p>Silences: ${d.silence_holds.map((h) => `${esc(h.silence_id)} ${h.released_at ? `released (${esc(h.outcome)})` : "holding delivery"}`).join("; ")}</p>` : ""}
      ${decidable ? `<form class="decide" id="decide">
        <input id="reviewer" placeholder="your name" required value="${esc(localStorage.getItem("shotline-reviewer") || "")}">
        <input id="reason" placeholder="reason" required>
        <button type="button" class="confirm" id="confirm">Confirm</button>
        <select id="new-class"><option value="">class…</option><option>gunfire</option><option>probable_gunfire</option><option>fireworks</option><option>other</option></select>
        <input id="new-rounds" type="number" min="1" placeholder="rounds" style="width:6rem">
        <button type="button" id="reclassify">Reclassify</button>
        <button type="button" class="reject" id="reject">Reject (cancel)</button></form>` : ""}
      <p id="decide-result" class="meta">${esc(state.notice && state.notice.id === rec.incident_id ? state.notice.text : "")}</p>
      <h2>Versions</h2><table id="versions"><tr><th>v</th><th>event</th><th>class</th><th>p</th><th>rounds</th><th>location (95 %)</th><th>review</th><th>stored</th></tr>${versions}</table>
      <h2>Deliveries</h2><table id="deliveries"><tr><th>subscriber</th><th>v</th><th>event</th><th>status</th><th>attempts</th></tr>${deliveries || "<tr><td colspan=5>none</td></tr>"}</table>
      <h2>Outcomes</h2><table><tr><th>recorded</th><th>units</th><th>evidence</th><th>911 call</th><th>disposition</th></tr>${outcomes || "<tr><td colspan=5>none</td></tr>"}</table>`;
    if (decidable) for (const decision of ["confirm", "reclassify", "reject"]) $(`#${decision}`).addEventListener("click", () => decide(rec.incident_id, decision));
  }
  async function decide(id, decision) {
    const reviewer = $("#reviewer").value.trim(), reason = $("#reason").value.trim();
    const say = (text) => { state.notice = { id, text }; $("#decide-result").textContent = text; };
    if (!reviewer || !reason) { say("name and reason are required"); return; }
    localStorage.setItem("shotline-reviewer", reviewer);
    const body = { decision, reviewed_by: reviewer, reason };
    if (decision === "reclassify") { if ($("#new-class").value) body.classification = $("#new-class").value; if ($("#new-rounds").value) body.rounds = Number($("#new-rounds").value); }
    // the feed may redraw the page before the answer arrives: the notice survives redraws
    try { const v = await api(`/v1/reviews/${encodeURIComponent(id)}`, { method: "POST", body: JSON.stringify(body) }); say(`${decision} stored as version ${v.version}`); await showIncident(id); }
    catch (err) { say(err.message); }
  }
  async function showReviews() {
    const items = await api("/v1/reviews");
    $("#reviews").innerHTML = `<p><a href="#">← live</a></p><h2>Review queue (earliest deadline first)</h2><table><tr><th>deadline</th><th>incident</th><th>class</th><th>p</th><th>rounds</th><th>zone</th></tr>${items.map((q) => `<tr><td>${time(q.deadline_at)}</td><td><a href="#incident/${encodeURIComponent(q.incident_id)}">${esc(q.incident_id)}</a></td><td>${esc(q.classification)}</td><td>${q.gunfire_probability.toFixed(2)}</td><td>${q.rounds}</td><td>${esc(q.zone)}</td></tr>`).join("") || "<tr><td colspan=6>nothing waiting</td></tr>"}</table>`;
  }
  async function showSensors() {
    const rows = await api("/v1/console/sensors");
    $("#sensors").innerHTML = `<p><a href="#">← live</a></p><h2>Sensors (health from the last 24 h of incidents)</h2><table id="sensor-table"><tr><th>sensor</th><th>zone</th><th>status</th><th>last seen</th><th>located with</th><th>rejected by the solver</th><th>clock (median residual)</th></tr>${rows.map((s) => `<tr data-sensor-id="${esc(s.sensor_id)}"><td>${esc(s.sensor_id)}</td><td>${esc(s.zone)}</td><td>${esc(s.status)}</td><td>${when(s.last_seen_at)}</td><td>${s.used}</td><td>${s.rejected_share === null ? "—" : `${Math.round(s.rejected_share * 100)} %`}${s.rejected_share > 0.2 ? " ⚠ degraded" : ""}</td><td>${s.median_residual_s == null ? "—" : `${(s.median_residual_s * 1000).toFixed(2)} ms`}${s.flagged ? " ⚠ drifting" : ""}</td></tr>`).join("")}</table>`;
  }

  async function loadLayers() { try { state.layers = await api("/v1/console/map"); drawMap(); } catch (err) { console.warn(err); } }
  function start() { follow(); loadLayers(); setInterval(loadLayers, 30000); route(); }
  if (state.token) start(); else $("#login").hidden = false;
})();
