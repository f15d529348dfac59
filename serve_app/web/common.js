// What the dashboard and the terminals share: tokens, the API and its errors, the
// reconnecting sync socket, the orders as their events tell them, and a canvas map.

export const devMode = document.body.dataset.devMode === "true";

// -- small DOM helpers: text is always set as text, never parsed as HTML ----------------

export function el(tag, attrs = {}, ...children) {
  const node = document.createElement(tag);
  for (const [name, value] of Object.entries(attrs)) {
    if (value === null || value === undefined || value === false) continue;
    if (name.startsWith("on")) node.addEventListener(name.slice(2), value);
    else if (name === "class") node.className = value;
    else node.setAttribute(name, value === true ? "" : value);
  }
  for (const child of children.flat()) {
    if (child === null || child === undefined || child === false) continue;
    node.append(child instanceof Node ? child : String(child));
  }
  return node;
}

export function fen(amount) {
  return amount === null || amount === undefined ? "–" : `¥${(amount / 100).toFixed(2)}`;
}

export function clock(iso) {
  return iso ? new Date(iso).toLocaleTimeString([], { hour12: false }) : "–";
}

export function secondsUntil(iso) {
  return Math.max(0, Math.ceil((Date.parse(iso) - Date.now()) / 1000));
}

export function shortId(id) {
  return id && id.length > 14 ? `…${id.slice(-10)}` : id;
}

export function param(name, fallback) {
  const value = new URLSearchParams(location.search).get(name);
  return value === null || value === "" ? fallback : value;
}

export function numberParam(name, fallback) {
  const value = Number(param(name, NaN));
  return Number.isFinite(value) ? value : fallback;
}

// -- the API: JSON in and out, errors as the API words them ----------------------------

export class ApiError extends Error {
  constructor(status, code, message, details) {
    super(message);
    this.status = status;
    this.code = code;
    this.details = details || {};
  }

  // What the user reads: the API's own code and message, and the details that say why.
  describe() {
    const facts = Object.entries(this.details)
      .filter(([, v]) => v !== null && typeof v !== "object")
      .map(([k, v]) => `${k}: ${v}`);
    return `${this.code}: ${this.message}${facts.length ? ` (${facts.join(", ")})` : ""}`;
  }
}

export async function call(method, path, { token, body, key } = {}) {
  const headers = { accept: "application/json" };
  if (token) headers.authorization = `Bearer ${token}`;
  if (body !== undefined) headers["content-type"] = "application/json";
  if (key) headers["idempotency-key"] = key;
  let answer;
  try {
    answer = await fetch(path, {
      method,
      headers,
      body: body === undefined ? undefined : JSON.stringify(body),
    });
  } catch (err) {
    throw new ApiError(0, "network_error", "the platform did not answer", {});
  }
  const text = await answer.text();
  let data = null;
  try {
    data = text ? JSON.parse(text) : null;
  } catch {
    data = null;
  }
  if (!answer.ok) {
    const error = data && data.error;
    if (error) throw new ApiError(answer.status, error.code, error.message, error.details);
    throw new ApiError(answer.status, "http_error", `HTTP ${answer.status}`, {});
  }
  return data;
}

export function describe(err) {
  return err instanceof ApiError ? err.describe() : String(err && err.message ? err.message : err);
}

// -- tokens: one per party, kept for the tab's life ------------------------------------

export const tokens = {
  get(role, sub) {
    return sessionStorage.getItem(`o2o.token.${role}.${sub}`);
  },
  set(role, sub, token) {
    sessionStorage.setItem(`o2o.token.${role}.${sub}`, token);
  },
  forget(role, sub) {
    sessionStorage.removeItem(`o2o.token.${role}.${sub}`);
  },
  async dev(role, sub) {
    const { token } = await call("POST", "/v1/auth/dev-token", { body: { role, sub } });
    tokens.set(role, sub, token);
    return token;
  },
};

// A token given in the address (dev mode only), taken out of the address at once so it is
// neither bookmarked nor shown.
export function tokenFromAddress() {
  const url = new URL(location.href);
  const token = url.searchParams.get("token");
  if (token === null) return null;
  url.searchParams.delete("token");
  history.replaceState(null, "", url);
  return devMode ? token : null;
}

// -- the sync socket ---------------------------------------------------------------------

// One terminal's event stream over `/v1/sync/ws`. It keeps the cursor of the last event
// it handed on and reconnects from there after a drop, so nothing is missed and nothing
// comes twice. `onStatus` hears "connecting", "live" and "reconnecting".
export class Sync {
  constructor({ token, viewing = null, onEvent, onResync, onStatus }) {
    this.token = token;
    this.viewing = viewing;
    this.cursor = null;
    this.onEvent = onEvent;
    this.onResync = onResync || (() => {});
    this.onStatus = onStatus || (() => {});
    this.ws = null;
    this.failures = 0;
    this.stopped = false;
    this.heardAt = 0;
    this.connects = 0;
    window.addEventListener("online", () => this.ws === null && this.connect());
  }

  start() {
    this.connect();
    // A ping every 15 s; a socket silent for 40 s is taken for dead (a half-open
    // connection never reports its own end).
    this.heartbeat = setInterval(() => {
      if (!this.ws || this.ws.readyState !== WebSocket.OPEN) return;
      if (Date.now() - this.heardAt > 40_000) this.drop();
      else this.ws.send(JSON.stringify({ type: "ping" }));
    }, 15_000);
  }

  stop() {
    this.stopped = true;
    clearInterval(this.heartbeat);
    if (this.ws) this.ws.close();
  }

  view(merchantId) {
    this.viewing = merchantId;
    if (this.ws && this.ws.readyState === WebSocket.OPEN) {
      this.ws.send(JSON.stringify({ type: "view", merchant_id: merchantId }));
    }
  }

  url() {
    const query = new URLSearchParams({ token: this.token });
    if (this.cursor) query.set("cursor", this.cursor);
    if (this.viewing) query.set("viewing", this.viewing);
    const scheme = location.protocol === "https:" ? "wss" : "ws";
    return `${scheme}://${location.host}/v1/sync/ws?${query}`;
  }

  connect() {
    clearTimeout(this.retry);
    if (this.stopped) return;
    this.onStatus(this.connects++ === 0 ? "connecting" : "reconnecting");
    const ws = new WebSocket(this.url());
    this.ws = ws;
    ws.onopen = () => {
      this.failures = 0;
      this.heardAt = Date.now();
      this.onStatus("live");
    };
    ws.onmessage = (message) => {
      this.heardAt = Date.now();
      let frame;
      try {
        frame = JSON.parse(message.data);
      } catch {
        return;
      }
      if (frame.type === "pong") return;
      if (frame.type === "resync_required") {
        this.cursor = frame.cursor;
        this.onResync((frame.data && frame.data.orders) || []);
        return;
      }
      // Menu changes carry no cursor: they are not part of the stream.
      if (frame.cursor) this.cursor = frame.cursor;
      this.onEvent(frame);
    };
    ws.onclose = () => {
      if (this.ws === ws) this.lost();
    };
  }

  drop() {
    const ws = this.ws;
    this.lost();
    if (ws) ws.close();
  }

  lost() {
    this.ws = null;
    if (this.stopped) return;
    this.onStatus("reconnecting");
    // Quick at first, then backing off to 5 s; the jitter keeps a whole city of
    // terminals from coming back in the same instant after a restart.
    const delay = Math.min(5000, 250 * 2 ** this.failures++) * (0.75 + Math.random() / 2);
    this.retry = setTimeout(() => this.connect(), delay);
  }
}

// Shows a socket's state in an element; "reconnecting" is what the user must notice.
export function statusBadge(node) {
  return (status) => {
    node.textContent = status;
    node.dataset.status = status;
  };
}

// -- orders as their events tell them ------------------------------------------------------

export const STATUS_AFTER = {
  order_placed: "pending_payment",
  order_paid: "paid",
  order_accepted: "accepted",
  order_ready: "ready",
  order_picked_up: "picked_up",
  order_delivered: "delivered",
  order_cancelled: "cancelled",
  order_rejected: "rejected",
};

export const CLOSED = new Set(["delivered", "cancelled", "rejected"]);

// Each order at the highest version heard of, from events and from whole orders read.
// `revision` counts the changes of a record, so a view redraws only what changed.
export class OrderBook {
  constructor() {
    this.orders = new Map();
  }

  get(id) {
    return this.orders.get(id);
  }

  // The order an event changes, or null when the event is old news. Events beside the
  // transitions (a rider's position, a refund) carry the current version and still count.
  apply(event) {
    if (!event.order_id || typeof event.version !== "number") return null;
    const known = this.orders.get(event.order_id) || { id: event.order_id, version: 0 };
    const status = STATUS_AFTER[event.type];
    if (event.version < known.version) return null;
    if (event.version === known.version && (status || event.type === "rider_assigned")) {
      return null;
    }
    known.version = event.version;
    if (status) known.status = status;
    if (event.type === "rider_assigned") known.rider_id = event.data.rider_id;
    // The merchant's time to answer comes with the payment (when the order has one).
    const deadline = event.data && event.data.accept_deadline;
    if (deadline) known.accept_deadline = deadline;
    known.changed_at = Date.now();
    known.revision = (known.revision || 0) + 1;
    this.orders.set(known.id, known);
    return known;
  }

  // A whole order (read from the API or sent by a resync) unless an event was newer.
  merge(order) {
    const known = this.orders.get(order.id);
    if (known && known.version > order.version) {
      // Events told of something newer: take only what they do not carry (places, items).
      for (const [name, value] of Object.entries(order)) if (!(name in known)) known[name] = value;
      known.revision += 1;
      return known;
    }
    const revision = known ? known.revision + 1 : 1;
    const merged = { ...known, ...order, changed_at: Date.now(), revision };
    this.orders.set(order.id, merged);
    return merged;
  }

  values() {
    return [...this.orders.values()];
  }
}

// -- a map on a canvas ----------------------------------------------------------------------

const METERS_PER_DEGREE = 111_320;

// A flat projection around a centre: at city scale the error is far below a pixel.
export class CanvasMap {
  constructor(canvas, { lat, lng, radiusM, movable = false, onMove }) {
    this.canvas = canvas;
    this.ctx = canvas.getContext("2d");
    this.lat = lat;
    this.lng = lng;
    this.radiusM = radiusM;
    this.onMove = onMove || (() => {});
    this.resize();
    new ResizeObserver(() => this.resize()).observe(canvas);
    if (movable) this.letMove();
  }

  resize() {
    const ratio = window.devicePixelRatio || 1;
    const { width, height } = this.canvas.getBoundingClientRect();
    this.width = Math.max(1, width);
    this.height = Math.max(1, height);
    this.canvas.width = Math.round(this.width * ratio);
    this.canvas.height = Math.round(this.height * ratio);
    this.ctx.setTransform(ratio, 0, 0, ratio, 0, 0);
    if (this.onResize) this.onResize();
  }

  // Pixels per metre, so that the radius fits the shorter side.
  get scale() {
    return Math.min(this.width, this.height) / 2 / this.radiusM;
  }

  project(lat, lng) {
    const x = (lng - this.lng) * METERS_PER_DEGREE * Math.cos((this.lat * Math.PI) / 180);
    const y = (lat - this.lat) * METERS_PER_DEGREE;
    return [this.width / 2 + x * this.scale, this.height / 2 - y * this.scale];
  }

  unproject(px, py) {
    const x = (px - this.width / 2) / this.scale;
    const y = (this.height / 2 - py) / this.scale;
    return [
      this.lat + y / METERS_PER_DEGREE,
      this.lng + x / (METERS_PER_DEGREE * Math.cos((this.lat * Math.PI) / 180)),
    ];
  }

  center(lat, lng, radiusM = this.radiusM) {
    this.lat = lat;
    this.lng = lng;
    this.radiusM = radiusM;
    this.onMove();
  }

  // Drag to pan, wheel to zoom.
  letMove() {
    let from = null;
    this.canvas.addEventListener("pointerdown", (e) => {
      from = [e.offsetX, e.offsetY, this.lat, this.lng];
      this.canvas.setPointerCapture(e.pointerId);
    });
    this.canvas.addEventListener("pointermove", (e) => {
      if (!from) return;
      const [x0, y0, lat0, lng0] = from;
      const dLat = (e.offsetY - y0) / this.scale / METERS_PER_DEGREE;
      const dLng =
        -(e.offsetX - x0) / this.scale / (METERS_PER_DEGREE * Math.cos((lat0 * Math.PI) / 180));
      this.center(lat0 + dLat, lng0 + dLng);
    });
    this.canvas.addEventListener("pointerup", () => (from = null));
    this.canvas.addEventListener(
      "wheel",
      (e) => {
        e.preventDefault();
        const factor = e.deltaY > 0 ? 1.2 : 1 / 1.2;
        this.center(this.lat, this.lng, Math.min(15_000, Math.max(300, this.radiusM * factor)));
      },
      { passive: false },
    );
  }

  clear(color) {
    this.ctx.fillStyle = color;
    this.ctx.fillRect(0, 0, this.width, this.height);
  }

  dot(lat, lng, radius, fill, stroke) {
    const [x, y] = this.project(lat, lng);
    const ctx = this.ctx;
    ctx.beginPath();
    ctx.arc(x, y, radius, 0, 2 * Math.PI);
    ctx.fillStyle = fill;
    ctx.fill();
    if (stroke) {
      ctx.lineWidth = 2;
      ctx.strokeStyle = stroke;
      ctx.stroke();
    }
  }

  square(lat, lng, size, fill) {
    const [x, y] = this.project(lat, lng);
    this.ctx.fillStyle = fill;
    this.ctx.fillRect(x - size / 2, y - size / 2, size, size);
  }

  // One path through the points, for a line or a polygon to stroke or fill.
  trace(points) {
    const ctx = this.ctx;
    ctx.beginPath();
    points.forEach(([lat, lng], i) => {
      const [x, y] = this.project(lat, lng);
      if (i === 0) ctx.moveTo(x, y);
      else ctx.lineTo(x, y);
    });
    return ctx;
  }

  line(points, stroke, width = 1, dash = []) {
    const ctx = this.trace(points);
    ctx.setLineDash(dash);
    ctx.lineWidth = width;
    ctx.strokeStyle = stroke;
    ctx.stroke();
    ctx.setLineDash([]);
  }

  polygon(points, fill, stroke, width = 1) {
    const ctx = this.trace(points);
    ctx.closePath();
    if (fill) {
      ctx.fillStyle = fill;
      ctx.fill();
    }
    if (stroke) {
      ctx.lineWidth = width;
      ctx.strokeStyle = stroke;
      ctx.stroke();
    }
  }

  arrow(from, to, stroke) {
    const [x0, y0] = this.project(...from);
    const [x1, y1] = this.project(...to);
    const angle = Math.atan2(y1 - y0, x1 - x0);
    const ctx = this.ctx;
    ctx.lineWidth = 2;
    ctx.strokeStyle = stroke;
    ctx.beginPath();
    ctx.moveTo(x0, y0);
    ctx.lineTo(x1, y1);
    ctx.lineTo(x1 - 9 * Math.cos(angle - 0.4), y1 - 9 * Math.sin(angle - 0.4));
    ctx.moveTo(x1, y1);
    ctx.lineTo(x1 - 9 * Math.cos(angle + 0.4), y1 - 9 * Math.sin(angle + 0.4));
    ctx.stroke();
  }

  label(lat, lng, text, color = "#333", dx = 6, dy = -6) {
    const [x, y] = this.project(lat, lng);
    this.ctx.font = "11px system-ui, sans-serif";
    this.ctx.fillStyle = color;
    this.ctx.fillText(text, x + dx, y + dy);
  }

  // A bar of a round length in the corner, so distances can be read.
  scaleBar() {
    const target = 80 / this.scale;
    const meters = [100, 200, 500, 1000, 2000, 5000, 10000].find((m) => m >= target) || 10000;
    const px = meters * this.scale;
    const ctx = this.ctx;
    const y = this.height - 14;
    ctx.strokeStyle = "#444";
    ctx.lineWidth = 2;
    ctx.beginPath();
    ctx.moveTo(12, y);
    ctx.lineTo(12 + px, y);
    ctx.stroke();
    ctx.font = "11px system-ui, sans-serif";
    ctx.fillStyle = "#444";
    ctx.fillText(meters >= 1000 ? `${meters / 1000} km` : `${meters} m`, 16 + px, y + 4);
  }
}

// Draw at most once per frame however many updates arrive: at the lunch peak events come
// faster than the screen refreshes. Each drawing's time goes to the page's performance
// timeline under `name` (up to five thousand), where devtools and the tests read it.
export function painter(paint, name = "paint") {
  let pending = false;
  let measured = 0;
  return () => {
    if (pending) return;
    pending = true;
    requestAnimationFrame(() => {
      pending = false;
      const start = performance.now();
      paint();
      if (++measured % 5000 === 0) performance.clearMeasures(name);
      performance.measure(name, { start });
    });
  };
}

export function newKey() {
  return crypto.randomUUID ? crypto.randomUUID() : `${Date.now()}-${Math.random()}`;
}

// Statuses as people say them.
export const STATUS_WORDS = {
  pending_payment: "awaiting payment",
  paid: "paid",
  accepted: "accepted",
  ready: "ready",
  picked_up: "picked up",
  delivered: "delivered",
  cancelled: "cancelled",
  rejected: "rejected",
};

export const STATUS_COLORS = {
  pending_payment: "#9e9e9e",
  paid: "#7b1fa2",
  accepted: "#1565c0",
  ready: "#00838f",
  picked_up: "#ef6c00",
  delivered: "#2e7d32",
  cancelled: "#6d4c41",
  rejected: "#c62828",
};

// Elements with `data-until` (an instant) show the seconds left, after `data-label`;
// one timer for the whole page.
export function startCountdowns() {
  const tick = () => {
    for (const node of document.querySelectorAll("[data-until]")) {
      const left = secondsUntil(node.dataset.until);
      const minutes = Math.floor(left / 60);
      const shown = minutes ? `${minutes}:${String(left % 60).padStart(2, "0")}` : `${left} s`;
      node.textContent = left > 0 ? `${node.dataset.label || ""} ${shown}`.trim() : "expired";
      node.classList.toggle("urgent", left <= 10);
    }
  };
  tick();
  setInterval(tick, 250);
}

// Metres between two points (haversine), for the terminals' distances and the ride.
export function metersBetween([lat1, lng1], [lat2, lng2]) {
  const rad = Math.PI / 180;
  const h =
    Math.sin(((lat2 - lat1) * rad) / 2) ** 2 +
    Math.cos(lat1 * rad) * Math.cos(lat2 * rad) * Math.sin(((lng2 - lng1) * rad) / 2) ** 2;
  return 2 * 6_371_008.8 * Math.asin(Math.min(1, Math.sqrt(h)));
}
