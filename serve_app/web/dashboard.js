// The operations dashboard: the city on a map, the figures, and the operations stream.
//
// Orders' changes come live over the sync socket (the operations stream: every event of
// every order); riders' positions, zones' demand and the figures are read every few
// seconds, since no stream carries them to operations.

import {
  ApiError,
  CLOSED,
  CanvasMap,
  OrderBook,
  STATUS_COLORS,
  Sync,
  call,
  clock,
  describe,
  devMode,
  el,
  fen,
  numberParam,
  painter,
  shortId,
  statusBadge,
  tokenFromAddress,
  tokens,
} from "/web/common.js";

const CITY_EVERY_MS = 2000;
const FIGURES_EVERY_MS = 5000;
const SERIES_EVERY_MS = 5000;
const EVENTS_SHOWN = 40;
// A delivered or cancelled order stays on the map this long, then leaves it.
const CLOSED_SHOWN_MS = 30_000;
const WINDOW_MIN = 15;

const $ = (id) => document.getElementById(id);

const state = {
  token: null,
  city: { merchants: [], riders: [], zones: new Map() },
  figures: null,
  series: [],
  book: new OrderBook(),
  waiting: new Map(), // order id -> {zone, at}: told by `dispatch_waiting`
  events: [],
  eventCount: 0,
};

const map = new CanvasMap($("map"), {
  lat: numberParam("lat", 30.259),
  lng: numberParam("lng", 120.149),
  radiusM: numberParam("radius_m", 6000),
  movable: true,
  onMove: () => {
    repaint();
    clearTimeout(state.moved);
    state.moved = setTimeout(refreshCity, 250);
  },
});
const repaint = painter(paint, "dashboard paint");
map.onResize = repaint;
new ResizeObserver(() => drawChart()).observe($("chart"));

// -- signing in --------------------------------------------------------------------------

async function start() {
  $("login-dev").hidden = !devMode;
  const given = tokenFromAddress();
  if (given) tokens.set("admin", "dashboard", given);
  const token = tokens.get("admin", "dashboard");
  if (token) await signIn(token);
  else showLogin("");
}

async function signIn(token) {
  try {
    state.figures = await call("GET", `/v1/admin/metrics?window_min=${WINDOW_MIN}`, { token });
  } catch (err) {
    tokens.forget("admin", "dashboard");
    const notAnOperator = err instanceof ApiError && err.status === 403;
    showLogin(notAnOperator ? "this token is not an operator's" : describe(err));
    return;
  }
  tokens.set("admin", "dashboard", token);
  state.token = token;
  $("login").hidden = true;
  $("board").hidden = false;
  $("sign-out").hidden = false;
  map.resize();
  begin();
}

function showLogin(message) {
  $("board").hidden = true;
  $("login").hidden = false;
  $("login-error").textContent = message;
}

$("login").addEventListener("submit", (e) => {
  e.preventDefault();
  const token = $("login-token").value.trim();
  if (token) signIn(token);
});

$("login-dev").addEventListener("click", async () => {
  try {
    await signIn(await tokens.dev("admin", "dashboard"));
  } catch (err) {
    $("login-error").textContent = describe(err);
  }
});

$("sign-out").addEventListener("click", () => {
  tokens.forget("admin", "dashboard");
  location.reload();
});

// -- keeping up ------------------------------------------------------------------------------

function begin() {
  const sync = new Sync({
    token: state.token,
    onEvent,
    onResync: () => note({ type: "resync_required", at: new Date().toISOString() }),
    onStatus: statusBadge($("sync-status")),
  });
  sync.start();
  showFigures();
  every(CITY_EVERY_MS, refreshCity);
  every(FIGURES_EVERY_MS, refreshFigures);
  every(SERIES_EVERY_MS, refreshSeries);
  setInterval(() => ($("clock").textContent = clock(new Date().toISOString())), 1000);
  setInterval(forgetOldOrders, 10_000);
}

// Run `job` now and then again `ms` after each run ends, so slow answers never pile up.
function every(ms, job) {
  const run = async () => {
    await job();
    setTimeout(run, ms);
  };
  run();
}

function onEvent(event) {
  state.eventCount += 1;
  note(event);
  const order = state.book.apply(event);
  if (event.type === "dispatch_waiting") {
    state.waiting.set(event.order_id, { zone: event.data.zone, at: event.at });
  } else if (event.type === "rider_assigned" || (order && CLOSED.has(order.status))) {
    state.waiting.delete(event.order_id);
  }
  // The figures move with the orders: read them soon, once for a burst of events.
  clearTimeout(state.figuresSoon);
  state.figuresSoon = setTimeout(refreshFigures, 1000);
  repaint();
}

function note(event) {
  state.events.unshift(event);
  state.events.length = Math.min(state.events.length, EVENTS_SHOWN);
  repaint();
}

async function refreshCity() {
  const query = new URLSearchParams({
    lat: map.lat.toFixed(6),
    lng: map.lng.toFixed(6),
    radius_m: String(Math.round(Math.min(15000, Math.max(100, map.radiusM * 1.5)))),
    window_min: String(WINDOW_MIN),
  });
  try {
    const city = await call("GET", `/v1/admin/city?${query}`, { token: state.token });
    state.city = {
      merchants: city.merchants,
      riders: city.riders,
      zones: new Map(city.zones.map((z) => [z.zone, z])),
    };
    for (const order of city.orders) {
      state.book.merge({ ...order, located: true });
    }
    $("map-error").textContent = "";
  } catch (err) {
    $("map-error").textContent = describe(err);
  }
  repaint();
}

async function refreshFigures() {
  try {
    state.figures = await call("GET", `/v1/admin/metrics?window_min=${WINDOW_MIN}`, {
      token: state.token,
    });
    $("figures-error").textContent = "";
  } catch (err) {
    $("figures-error").textContent = describe(err);
  }
  showFigures();
  repaint();
}

async function refreshSeries() {
  try {
    const answer = await call("GET", "/v1/admin/metrics/series?minutes=60", { token: state.token });
    state.series = answer.series;
  } catch (err) {
    $("figures-error").textContent = describe(err);
  }
  drawChart();
}

function forgetOldOrders() {
  const now = Date.now();
  for (const order of state.book.values()) {
    if (CLOSED.has(order.status) && now - order.changed_at > CLOSED_SHOWN_MS) {
      state.book.orders.delete(order.id);
      state.waiting.delete(order.id);
    }
  }
  repaint();
}

// -- showing ---------------------------------------------------------------------------------

function percent(share) {
  return share === null || share === undefined ? "–" : `${(share * 100).toFixed(1)}%`;
}

function orDash(value) {
  return value === null || value === undefined ? "–" : String(value);
}

function showFigures() {
  const f = state.figures;
  if (!f) return;
  const shown = {
    orders_per_min: orDash(f.orders_per_min),
    gmv: fen(f.gmv_fen),
    avg_delivery_minutes: orDash(f.avg_delivery_minutes),
    dispatch_success_rate: percent(f.dispatch_success_rate),
    merchant_onboarding_per_hour: orDash(f.merchant_onboarding_per_hour),
    repeat_purchase_rate: percent(f.repeat_purchase_rate),
    orders: orDash(f.orders),
    delivered: orDash(f.delivered),
  };
  for (const node of document.querySelectorAll("[data-figure]")) {
    node.textContent = shown[node.dataset.figure];
  }
  $("window").textContent = String(f.window_minutes);
  showHotZones(f.hot_zones || []);
  showWaiting(f.waiting || {});
}

function showHotZones(hot) {
  const rows = hot.map((zone) =>
    el(
      "tr",
      {
        class: zone.riders_needed > 0 ? "short" : "",
        title: "show on the map",
        onclick: () => {
          const known = state.city.zones.get(zone.zone);
          if (known) map.center(known.center[0], known.center[1]);
        },
      },
      el("td", { class: "mono" }, zone.zone),
      el("td", {}, zone.orders),
      el("td", {}, zone.waiting),
      el("td", {}, zone.idle_riders),
      el("td", {}, zone.riders_needed),
      el(
        "td",
        { class: "mono small" },
        (zone.move_from || []).map((m) => `${m.zone} (${m.idle_riders})`).join(", ") || "–",
      ),
    ),
  );
  $("hot-zones").replaceChildren(...rows);
}

function showWaiting(byZone) {
  const items = Object.entries(byZone).map(([zone, w]) =>
    el(
      "li",
      {},
      el("span", { class: "mono" }, zone),
      ` ${w.orders} waiting, oldest ${w.oldest_s} s`,
    ),
  );
  const orders = [...state.waiting.entries()]
    .slice(-8)
    .map(([id, w]) => el("li", { class: "small" }, `${shortId(id)} since ${clock(w.at)}`));
  if (!items.length && !orders.length) items.push(el("li", { class: "muted" }, "none"));
  $("waiting").replaceChildren(...items, ...orders);
}

function showEvents() {
  const rows = state.events.map((e) =>
    el(
      "li",
      { "data-type": e.type, "data-order": e.order_id || "", "data-version": e.version ?? "" },
      el("span", { class: "muted" }, clock(e.at)),
      " ",
      el("b", {}, e.type),
      " ",
      e.order_id ? el("span", { class: "mono" }, shortId(e.order_id)) : "",
      typeof e.version === "number" ? ` v${e.version}` : "",
    ),
  );
  $("events").replaceChildren(...rows);
  $("event-count").textContent = `${state.eventCount} received`;
}

function hotZones() {
  const hot = (state.figures && state.figures.hot_zones) || [];
  return new Map(hot.filter((h) => h.riders_needed > 0).map((h) => [h.zone, h]));
}

function paint() {
  map.clear("#f4f2ee");
  const zones = [...state.city.zones.values()];
  const busiest = Math.max(1, ...zones.map((z) => z.orders));
  const hot = hotZones();
  for (const zone of zones) {
    const share = zone.orders / busiest;
    const fill = zone.orders ? `rgba(230, 81, 0, ${(0.06 + 0.45 * share).toFixed(3)})` : null;
    map.polygon(zone.boundary, fill, "rgba(0,0,0,0.08)");
  }
  for (const zone of zones) {
    if (hot.has(zone.zone)) map.polygon(zone.boundary, null, "#c62828", 2.5);
    if (zone.waiting) {
      map.label(zone.center[0], zone.center[1], `${zone.waiting} waiting`, "#c62828", -22, 4);
    }
  }
  for (const [zoneId, entry] of hot) {
    const to = state.city.zones.get(zoneId);
    for (const from of entry.move_from || []) {
      const start = state.city.zones.get(from.zone);
      if (to && start) map.arrow(start.center, to.center, "#2e7d32");
    }
  }

  const now = Date.now();
  let openOrders = 0;
  for (const order of state.book.values()) {
    if (!order.located) continue;
    const closed = CLOSED.has(order.status);
    if (closed && now - order.changed_at > CLOSED_SHOWN_MS) continue;
    openOrders += closed ? 0 : 1;
    const color = STATUS_COLORS[order.status] || "#999";
    if (order.status === "picked_up") map.line([order.pickup, order.dropoff], color, 1, [4, 3]);
    const waiting = state.waiting.has(order.id);
    map.dot(order.dropoff[0], order.dropoff[1], 3, color, waiting ? "#c62828" : null);
  }

  const merchants = state.city.merchants;
  const labelled = merchants.length <= 30;
  for (const m of merchants) {
    map.square(m.lat, m.lng, 8, m.open ? "#37474f" : "#b0bec5");
    if (labelled) map.label(m.lat, m.lng, m.name, "#37474f");
  }
  let carrying = 0;
  for (const r of state.city.riders) {
    carrying += r.carrying ? 1 : 0;
    map.ctx.globalAlpha = r.fresh ? 1 : 0.35;
    map.dot(r.lat, r.lng, 5, r.carrying ? "#fb8c00" : "#43a047", r.offered ? "#1565c0" : "#fff");
    map.ctx.globalAlpha = 1;
  }
  map.scaleBar();
  $("city-summary").textContent =
    `${merchants.length} merchants · ${state.city.riders.length} riders online ` +
    `(${carrying} carrying) · ${openOrders} open orders`;
  showEvents();
}

function drawChart() {
  const canvas = $("chart");
  const ratio = window.devicePixelRatio || 1;
  const { width, height } = canvas.getBoundingClientRect();
  if (!width || !height) return;
  canvas.width = Math.round(width * ratio);
  canvas.height = Math.round(height * ratio);
  const ctx = canvas.getContext("2d");
  ctx.setTransform(ratio, 0, 0, ratio, 0, 0);
  ctx.clearRect(0, 0, width, height);
  const rows = state.series;
  if (!rows.length) return;
  const top = Math.max(1, ...rows.map((r) => Math.max(r.orders, r.delivered)));
  const left = 28;
  const bottom = height - 16;
  const step = (width - left - 4) / rows.length;
  const y = (value) => bottom - (value / top) * (bottom - 6);
  ctx.fillStyle = "#ffb74d";
  rows.forEach((r, i) => {
    ctx.fillRect(left + i * step, y(r.orders), Math.max(1, step - 1), bottom - y(r.orders));
  });
  ctx.strokeStyle = "#2e7d32";
  ctx.lineWidth = 2;
  ctx.beginPath();
  rows.forEach((r, i) => {
    const x = left + i * step + step / 2;
    if (i === 0) ctx.moveTo(x, y(r.delivered));
    else ctx.lineTo(x, y(r.delivered));
  });
  ctx.stroke();
  ctx.fillStyle = "#555";
  ctx.font = "10px system-ui, sans-serif";
  ctx.fillText(String(top), 2, 12);
  ctx.fillText("0", 2, bottom);
  ctx.fillText(clock(rows[0].minute).slice(0, 5), left, height - 3);
  const last = clock(rows[rows.length - 1].minute).slice(0, 5);
  ctx.fillText(last, width - ctx.measureText(last).width - 4, height - 3);
}

start();
