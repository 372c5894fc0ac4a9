// The console's map, drawn to be read at a glance from across a command room: the jurisdiction's grids (网格) as
// tinted areas, open incidents by priority (recent critical and high ones labelled, older ones quieter, closed ones
// faded), responders by kind (guards round, police diamonds, volunteers and grid workers square; filled when their
// phone's fix is fresh, hollow at their post). Place names appear as the operator zooms in, and a label that would
// overlap a more important one is hidden until there is room for it.
"use strict";

const MAP_COLORS = { critical: "#ff4d4f", high: "#ff8a1f", medium: "#ffb020", low: "#7f93a8", none: "#7f93a8" };
const GRID_TINTS = ["#3fa7ff", "#3ccf7a", "#b38cff", "#ffb020", "#4dd8d8", "#ff6b9a", "#c7d34d"];
const POLICE_ROLES = new Set(["officer", "chief"]);
const RECENT_S = 30 * 60;       // an open incident untouched this long is drawn smaller and not labelled
const CLOSED_SHOWN_S = 2 * 3600; // closed incidents stay on the map, faded, this long
const FRESH_S = 5 * 60;          // a critical incident pulses this long after it was reported
// zoom levels, relative to the zoom that fits the whole jurisdiction, at which place names appear
const PLACE_ZOOM = { police_post: 0, hospital: 0, market: 1, school: 1, enterprise: 1, transit: 1 };
const PLACE_ZOOM_OTHER = 2;

class ConsoleMap {
  /** `onSelect(incidentId)` is called when the operator clicks an incident on the map. */
  constructor(element, { places, tileUrl, onSelect }) {
    this.places = places;
    this.onSelect = onSelect;
    this.incidents = [];
    this.responders = [];
    this.selected = null;
    this.labels = [];  // {layer, rank, zoom}: every permanent label (zoom: levels in from the whole-jurisdiction view)
    // no fade: markers are redrawn on every incident change, and a fading copy would linger beside the new one
    this.map = L.map(element, { zoomSnap: 0.25, zoomDelta: 0.5, fadeAnimation: false, attributionControl: !!tileUrl });
    if (tileUrl) L.tileLayer(tileUrl, { maxZoom: 19 }).addTo(this.map);
    this.layers = Object.fromEntries(["grids", "places", "responders", "links", "incidents"]
      .map((name) => [name, L.layerGroup().addTo(this.map)]));
    this.bounds = L.latLngBounds(places.map((p) => [p.lat, p.lon]));
    this.drawGrids();  // widens this.bounds to the grids' areas
    this.fit();
    this.drawPlaces();
    this.addControls();
    this.map.on("zoomend moveend", () => this.declutter());
    // the panel is sized by the page's grid: refit when it changes size, unless the operator has moved the map
    let userMoved = false;
    this.map.on("dragstart zoomstart", () => { if (!this.fitting) userMoved = true; });
    new ResizeObserver(() => { this.map.invalidateSize(); if (!userMoved) this.fit(); this.declutter(); }).observe(element);
    this.resetView = () => { userMoved = false; this.fit(); };
  }

  fit() {
    this.fitting = true;
    // the legend runs along the bottom edge, and labels stand above their markers: keep the jurisdiction clear
    this.map.fitBounds(this.bounds, { paddingTopLeft: [44, 30], paddingBottomRight: [12, 34], animate: false });
    this.fitting = false;
    this.baseZoom = this.map.getZoom();
  }

  addControls() {
    const control = (position, build) => {
      const c = L.control({ position });
      c.onAdd = () => { const div = build(); L.DomEvent.disableClickPropagation(div); return div; };
      c.addTo(this.map);
    };
    control("topleft", () => JB.el("div", { class: "leaflet-bar map-reset" },
      JB.el("a", { href: "#", title: "显示全辖区", role: "button", onclick: (e) => { e.preventDefault(); this.resetView(); } }, "全")));
    const item = (cls, text) => JB.el("span", {}, JB.el("span", { class: `key ${cls}` }), text);
    control("bottomleft", () => JB.el("div", { class: "map-legend" },
      item("inc critical", "紧急/高警情"), item("inc medium", "其他警情"), item("inc closed", "已结束"),
      item("resp guard gps", "保安"), item("resp police gps", "民警/警长"), item("resp other gps", "义警/网格员"),
      JB.el("span", { class: "muted" }, "实心：实时定位 空心：在岗位")));
  }

  // --- the jurisdiction -----------------------------------------------------------------------------------------

  drawGrids() {
    const communities = this.places.filter((p) => p.kind === "community");
    communities.forEach((c, k) => {
      const members = this.places.filter((p) => p.grid === c.id || p.id === c.id);
      const tint = GRID_TINTS[k % GRID_TINTS.length];
      const area = L.polygon(bufferedHull(members, 140), { color: tint, weight: 1, opacity: 0.5, fillColor: tint,
        fillOpacity: 0.07, interactive: false }).addTo(this.layers.grids);
      this.bounds.extend(area.getBounds());
      const label = L.circleMarker([c.lat, c.lon], { radius: 0, opacity: 0, interactive: false })
        .bindTooltip(c.name, { permanent: true, direction: "center", className: "grid-label" }).addTo(this.layers.grids);
      this.labels.push({ layer: label, rank: 30, zoom: -Infinity });
    });
  }

  drawPlaces() {
    for (const p of this.places) {
      if (p.kind === "community") continue;  // drawn as its grid
      const important = p.kind === "police_post" || p.kind === "hospital";
      const dot = L.circleMarker([p.lat, p.lon], { radius: important ? 4 : 2.5, weight: important ? 2 : 1,
        color: p.kind === "police_post" ? "#3fa7ff" : p.kind === "hospital" ? "#ff6b9a" : "#6f8499", fillOpacity: 0.7 })
        .bindTooltip(p.name, { permanent: true, direction: "right", offset: [4, 0], className: `place-label kind-${p.kind}` })
        .addTo(this.layers.places);
      const extra = PLACE_ZOOM[p.kind] ?? PLACE_ZOOM_OTHER;
      this.labels.push({ layer: dot, rank: important ? 40 : 50 + extra, zoom: extra });
      hoverShowsLabel(dot);
    }
  }

  // --- incidents --------------------------------------------------------------------------------------------------

  setIncidents(incidents) {
    this.incidents = incidents.filter((i) => i.lat != null);
    this.drawIncidents();
  }

  drawIncidents() {
    const now = Date.now() / 1000;
    this.layers.incidents.clearLayers();
    this.labels = this.labels.filter((l) => !l.incident);
    // one marker per place: the most urgent open incident there speaks for the others ("×3")
    const open = new Map(), closed = [];
    for (const i of this.incidents) {
      if (JB.OPEN.has(i.status)) (open.get(i.place_id) || open.set(i.place_id, []).get(i.place_id)).push(i);
      else if (now - i.updated_at < CLOSED_SHOWN_S) closed.push(i);
    }
    for (const i of closed) {
      L.circleMarker([i.lat, i.lon], { radius: 5, color: "#7f93a8", weight: 1, opacity: 0.5, fillOpacity: 0.15 })
        .bindTooltip(`${JB.label("type", i.type)} @ ${i.place_name}（${JB.label("status", i.status)}）`, { className: "incident-hover" })
        .on("click", () => this.onSelect(i.id)).addTo(this.layers.incidents);
    }
    const groups = [...open.values()].map((list) => list.sort(byUrgency));
    groups.sort((a, b) => byUrgency(b[0], a[0]));  // most urgent drawn last, on top
    for (const group of groups) this.drawIncident(group, now);
    this.drawSelection();
    this.declutter();
  }

  drawIncident(group, now) {
    const i = group[0], urgent = i.priority === "critical" || i.priority === "high";
    const recent = now - i.updated_at < RECENT_S;
    const text = `${JB.incidentWhat(i)} · ${i.place_name}${group.length > 1 ? ` ×${group.length}` : ""}`;
    const marker = L.circleMarker([i.lat, i.lon], {
      radius: (urgent ? 11 : 8) * (recent ? 1 : 0.7), color: MAP_COLORS[i.priority] || MAP_COLORS.none, weight: 3,
      opacity: recent ? 1 : 0.6, fillOpacity: recent ? 0.4 : 0.2,
      className: `incident-marker${i.priority === "critical" && now - i.created_at < FRESH_S ? " pulse" : ""}`,
    }).on("click", () => this.onSelect(i.id)).addTo(this.layers.incidents);
    marker.incidentIds = group.map((x) => x.id);
    const labelled = urgent && recent;
    marker.bindTooltip(text, { permanent: labelled, direction: "top", offset: [0, -8],
      className: labelled ? `incident-label p-${i.priority}` : "incident-hover" });
    if (labelled) this.labels.push({ layer: marker, rank: i.priority === "critical" ? 10 : 20, since: i.created_at,
                                     zoom: -Infinity, incident: i.id });
  }

  /** Highlight an incident (and the responders alerted to it); null clears. Pans to it when it is out of view. */
  select(incidentId) {
    this.selected = incidentId;
    this.drawSelection();
    const i = this.incidents.find((x) => x.id === incidentId);
    if (i && !this.map.getBounds().pad(-0.1).contains([i.lat, i.lon])) this.map.panTo([i.lat, i.lon]);
    this.declutter();
  }

  drawSelection() {
    this.layers.links.clearLayers();
    this.labels = this.labels.filter((l) => !l.selection);
    const i = this.incidents.find((x) => x.id === this.selected);
    if (!i) return;
    const where = new Map(this.responders.map((r) => [r.id, r]));
    for (const r of i.responders || []) {
      const at = where.get(r.id);
      if (!at) continue;
      L.polyline([[i.lat, i.lon], [at.lat, at.lon]], { color: POLICE_ROLES.has(at.role) ? "#3fa7ff" : "#3ccf7a", weight: 2,
        dashArray: "6 5", opacity: 0.9, interactive: false }).addTo(this.layers.links);
    }
    const ring = L.circleMarker([i.lat, i.lon], { radius: 20, color: "#ffffff", weight: 3, fill: false, className: "selected-ring" })
      .bindTooltip(`${JB.incidentWhat(i)} · ${i.place_name}`, { permanent: true, direction: "top", offset: [0, -18],
        className: `incident-label selected p-${i.priority}` }).addTo(this.layers.links);
    this.labels.push({ layer: ring, rank: 0, zoom: -Infinity, selection: true });
  }

  // --- responders ---------------------------------------------------------------------------------------------------

  setResponders(responders) {
    this.responders = responders;
    this.layers.responders.clearLayers();
    for (const r of responders) {
      const kind = r.role === "guard" ? "guard" : POLICE_ROLES.has(r.role) ? "police" : "other";
      const icon = L.divIcon({ className: `resp ${kind} ${r.position === "gps" ? "gps" : "post"}${r.status !== "available" ? " busy" : ""}`,
        iconSize: [12, 12] });
      L.marker([r.lat, r.lon], { icon, keyboard: false, zIndexOffset: -100 })
        .bindTooltip(`${r.name}（${JB.label("role", r.role)}${r.position === "gps" ? "，实时定位" : "，在岗位"}${r.status !== "available" ? "，忙" : ""}）`)
        .addTo(this.layers.responders);
    }
    this.drawSelection();
  }

  // --- labels -------------------------------------------------------------------------------------------------------

  /** Show each permanent label whose zoom has come and that does not overlap a more important one already shown. */
  declutter() {
    const zoom = this.map.getZoom(), shown = [];
    const order = (a, b) => (a.rank - b.rank) || ((b.since || 0) - (a.since || 0));  // the newest incident first
    for (const label of [...this.labels].sort(order)) {
      const el = label.layer.getTooltip()?.getElement();
      if (!el) continue;
      let show = zoom >= this.baseZoom + label.zoom;
      if (show) {
        const r = el.getBoundingClientRect();
        show = !shown.some((s) => r.left < s.right && r.right > s.left && r.top < s.bottom && r.bottom > s.top);
        if (show) shown.push(r);
      }
      el.classList.toggle("label-hidden", !show);
    }
  }
}

// Negative when `a` is more urgent: higher priority, then newer.
function byUrgency(a, b) {
  return (JB.PRIORITY_ORDER[a.priority] - JB.PRIORITY_ORDER[b.priority]) || (b.created_at - a.created_at);
}

// A hidden place name still shows while the pointer is on its dot.
function hoverShowsLabel(layer) {
  layer.on("mouseover", () => layer.getTooltip()?.getElement()?.classList.add("hovered"));
  layer.on("mouseout", () => layer.getTooltip()?.getElement()?.classList.remove("hovered"));
}

// The convex hull of circles of `metres` around each place (a grid's area, drawn from the places it answers for).
function bufferedHull(places, metres) {
  const points = [];
  for (const p of places) {
    const dLat = metres / 111320, dLon = metres / (111320 * Math.cos(p.lat * Math.PI / 180));
    for (let k = 0; k < 12; k++) {
      const a = (k / 12) * 2 * Math.PI;
      points.push([p.lon + dLon * Math.cos(a), p.lat + dLat * Math.sin(a)]);
    }
  }
  points.sort((a, b) => a[0] - b[0] || a[1] - b[1]);
  const cross = (o, a, b) => (a[0] - o[0]) * (b[1] - o[1]) - (a[1] - o[1]) * (b[0] - o[0]);
  const half = (list) => {  // Andrew's monotone chain
    const out = [];
    for (const p of list) {
      while (out.length >= 2 && cross(out[out.length - 2], out[out.length - 1], p) <= 0) out.pop();
      out.push(p);
    }
    out.pop();
    return out;
  };
  return [...half(points), ...half([...points].reverse())].map(([lon, lat]) => [lat, lon]);
}
