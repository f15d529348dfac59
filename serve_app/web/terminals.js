// The customer, merchant and rider terminals side by side, each with its own token and
// its own sync stream, as three phones would be. The ids and places come from the
// address (`?customer=&merchant=&rider=&lat=&lng=&rider_lat=&rider_lng=`), by default
// the demo city's: customer c_001 ordering from Dongpo Pork House (m_002), rider r_demo.

import {
  ApiError,
  CLOSED,
  CanvasMap,
  OrderBook,
  STATUS_COLORS,
  STATUS_WORDS,
  Sync,
  call,
  clock,
  describe,
  devMode,
  el,
  fen,
  metersBetween,
  newKey,
  numberParam,
  painter,
  param,
  secondsUntil,
  shortId,
  startCountdowns,
  statusBadge,
  tokens,
} from "/web/common.js";

// A terminal's rider rides this fast toward its next stop: about fifteen times a real
// rider, so that a demo order is delivered in a minute, not in twenty.
const RIDE_M_PER_S = 80;
// A rider that does not move still reports where it is, or dispatch takes it for gone.
const HEARTBEAT_MS = 5000;
const ORDERS_SHOWN = 20;

const part = (section, selector) => section.querySelector(selector);

// -- each terminal's sign-in -------------------------------------------------------------

async function signIn(section, role, sub) {
  part(section, ".who").textContent = sub;
  let token = tokens.get(role, sub);
  if (token && !(await works(token))) {
    tokens.forget(role, sub);
    token = null;
  }
  if (!token && devMode) {
    try {
      token = await tokens.dev(role, sub);
    } catch (err) {
      part(section, ".error").textContent = describe(err);
    }
  }
  if (!token) token = await askForToken(section, role, sub);
  part(section, ".body").hidden = false;
  return token;
}

async function works(token) {
  try {
    await call("GET", "/v1/orders?limit=1", { token });
    return true;
  } catch (err) {
    return !(err instanceof ApiError && err.status === 401);
  }
}

function askForToken(section, role, sub) {
  const form = part(section, ".token-form");
  part(section, ".body").hidden = false;
  form.hidden = false;
  return new Promise((resolve) => {
    form.addEventListener("submit", async (e) => {
      e.preventDefault();
      const token = form.elements.token.value.trim();
      if (token && (await works(token))) {
        tokens.set(role, sub, token);
        form.hidden = true;
        part(section, ".error").textContent = "";
        resolve(token);
      } else {
        part(section, ".error").textContent = "unauthorized: this token is not accepted";
      }
    });
  });
}

// Draws points of interest on a terminal's small map, framed to fit them all.
function frame(map, points) {
  if (!points.length) return;
  const lat = points.reduce((s, p) => s + p[0], 0) / points.length;
  const lng = points.reduce((s, p) => s + p[1], 0) / points.length;
  const reach = Math.max(300, ...points.map((p) => metersBetween([lat, lng], p) * 1.25));
  map.lat = lat;
  map.lng = lng;
  map.radiusM = reach;
}

// Keeps a list's cards in place: a card is drawn again only when its order changed, so
// what a user is typing into another card stays.
function keyedList(list, draw) {
  const drawn = new Map();
  return (orders) => {
    const shown = new Set(orders.map((o) => o.id));
    for (const [id, seen] of drawn) {
      if (shown.has(id)) continue;
      seen.node.remove();
      drawn.delete(id);
    }
    for (const order of orders) {
      const signature = order.revision;
      const seen = drawn.get(order.id);
      if (seen && seen.signature === signature) continue;
      const card = draw(order);
      if (seen) seen.node.replaceWith(card);
      else list.prepend(card);
      drawn.set(order.id, { node: card, signature });
    }
  };
}

function orderLines(order) {
  return (order.items || []).map((i) => `${i.qty}× ${i.name}`).join(", ") || "…";
}

function statusOf(order) {
  return el(
    "span",
    { class: "status", "data-status": order.status || "" },
    STATUS_WORDS[order.status] || order.status || "…",
  );
}

// -- the customer --------------------------------------------------------------------------

const customer = {
  section: document.getElementById("customer"),
  id: param("customer", "c_001"),
  token: null,
  book: new OrderBook(),
  merchants: new Map(),
  merchant: null,
  menuVersion: null,
  current: null,
  note: "",
  fetchSoon: new Map(),
};
const customerMap = new CanvasMap(part(customer.section, ".map"), {
  lat: 30.259,
  lng: 120.149,
  radiusM: 2000,
});
const paintCustomer = painter(drawCustomerMap);
customerMap.onResize = paintCustomer;

async function startCustomer() {
  const c = customer;
  const find = part(c.section, ".find");
  find.elements.lat.value = numberParam("lat", 30.27);
  find.elements.lng.value = numberParam("lng", 120.125);
  find.elements.address.value = param("address", "1 Shuguang Rd");
  c.token = await signIn(c.section, "customer", c.id);
  find.addEventListener("submit", (e) => {
    e.preventDefault();
    findMerchants();
  });
  part(c.section, ".place").addEventListener("click", placeOrder);
  c.sync = new Sync({
    token: c.token,
    onEvent: onCustomerEvent,
    onResync: (orders) => {
      for (const order of orders) c.book.merge(order);
      showOrder();
    },
    onStatus: statusBadge(part(c.section, ".badge")),
  });
  c.sync.start();
}

function customerError(err) {
  part(customer.section, ".error").textContent = err ? describe(err) : "";
}

async function findMerchants() {
  const c = customer;
  const form = part(c.section, ".find");
  const query = new URLSearchParams({
    lat: form.elements.lat.value,
    lng: form.elements.lng.value,
    radius_m: "10000",
  });
  try {
    const { merchants } = await call("GET", `/v1/merchants/nearby?${query}`, { token: c.token });
    customerError(null);
    const list = merchants.map((m) => {
      c.merchants.set(m.id, m);
      return el(
        "li",
        {},
        el(
          "button",
          {
            type: "button",
            class: "link",
            "data-merchant": m.id,
            onclick: () => chooseMerchant(m),
          },
          m.name,
        ),
        el("span", { class: "muted small" }, ` ${(m.distance_m / 1000).toFixed(1)} km`),
      );
    });
    if (!list.length) list.push(el("li", { class: "muted" }, "nobody delivers here"));
    part(c.section, ".merchants").replaceChildren(...list);
  } catch (err) {
    customerError(err);
  }
}

async function chooseMerchant(merchant) {
  customer.merchant = merchant;
  customer.sync.view(merchant.id);
  part(customer.section, ".merchant-name").textContent = merchant.name;
  part(customer.section, ".menu").hidden = false;
  await loadMenu();
}

async function loadMenu() {
  const c = customer;
  try {
    const menu = await call("GET", `/v1/merchants/${encodeURIComponent(c.merchant.id)}/menu`, {
      token: c.token,
    });
    c.menuVersion = menu.menu_version;
    const list = part(c.section, ".items");
    // The same items keep their rows and inputs: a row replaced while the customer types
    // into it would drop the keystrokes (and the focus) of what they were typing.
    const shown = [...list.querySelectorAll("input")].map((i) => i.dataset.item);
    if (shown.join("\n") === menu.items.map((item) => item.id).join("\n")) {
      menu.items.forEach((item, at) => {
        const row = list.children[at];
        const soldOut = !item.available || item.stock <= 0;
        row.className = soldOut ? "sold-out" : "";
        row.querySelector(".grow").textContent = item.name;
        row.querySelector("input").setAttribute("aria-label", `how many ${item.name}`);
        row.querySelector(".price").textContent = fen(item.price_fen);
        row.querySelector(".stock").textContent = soldOut ? " sold out" : ` ${item.stock} left`;
      });
      return;
    }
    const typed = new Map([...list.querySelectorAll("input")].map((i) => [i.dataset.item, i.value]));
    const rows = menu.items.map((item) => {
      const soldOut = !item.available || item.stock <= 0;
      return el(
        "li",
        { class: soldOut ? "sold-out" : "" },
        el("span", { class: "grow" }, item.name),
        el("span", { class: "price" }, fen(item.price_fen)),
        el("span", { class: "stock muted small" }, soldOut ? " sold out" : ` ${item.stock} left`),
        el("input", {
          type: "number",
          min: "0",
          max: "1000",
          value: typed.get(item.id) || "0",
          "data-item": item.id,
          "aria-label": `how many ${item.name}`,
        }),
      );
    });
    list.replaceChildren(...rows);
  } catch (err) {
    customerError(err);
  }
}

async function placeOrder() {
  const c = customer;
  const form = part(c.section, ".find");
  const items = [...c.section.querySelectorAll(".items input")]
    .map((input) => ({ item_id: input.dataset.item, qty: Number(input.value) }))
    .filter((line) => line.qty > 0);
  if (!items.length) {
    part(c.section, ".error").textContent = "choose something first";
    return;
  }
  const body = {
    merchant_id: c.merchant.id,
    items,
    delivery: {
      lat: Number(form.elements.lat.value),
      lng: Number(form.elements.lng.value),
      address: form.elements.address.value,
    },
    menu_version: c.menuVersion,
  };
  try {
    const order = await call("POST", "/v1/orders", { token: c.token, body, key: newKey() });
    customerError(null);
    c.book.merge(order);
    c.current = order.id;
    c.note = "";
    for (const input of c.section.querySelectorAll(".items input")) input.value = "0";
    showOrder();
    loadMenu();
  } catch (err) {
    // The fresh menu first, then the reason: rows replaced under the customer's hands
    // would drop what they type in answer to it.
    if (err.code === "price_changed" || err.code === "out_of_stock") await loadMenu();
    customerError(err);
  }
}

async function pay(order) {
  // The sandbox stands in for the provider's pay page; its answer is not readable from
  // here (another origin), the provider's notification to the platform is what counts.
  try {
    await fetch(order.payment.pay_url, { method: "POST", mode: "no-cors" });
    customer.note = "payment sent; waiting for the provider's confirmation";
    customerError(null);
  } catch (err) {
    customerError(new ApiError(0, "payment_unreachable", "the payment sandbox did not answer"));
  }
  showOrder();
}

async function cancel(order) {
  try {
    const changed = await call("POST", `/v1/orders/${encodeURIComponent(order.id)}/cancel`, {
      token: customer.token,
      body: { reason: "changed my mind" },
      key: newKey(),
    });
    customer.book.merge(changed);
    customerError(null);
  } catch (err) {
    customerError(err);
  }
  showOrder();
}

function onCustomerEvent(event) {
  const c = customer;
  if (event.type === "menu_changed") {
    if (c.merchant && event.data.merchant_id === c.merchant.id) loadMenu();
    return;
  }
  const order = c.book.apply(event);
  if (!order) return;
  // The newest order is the one followed (after a reload too, as the backlog replays).
  if (event.type === "order_placed") c.current = event.order_id;
  if (event.type === "rider_location") {
    order.rider = { id: event.data.rider_id, lat: event.data.lat, lng: event.data.lng };
    order.eta = event.data.eta;
  } else if (event.order_id === c.current) {
    fetchSoon(c, event.order_id, showOrder);
  }
  showOrder();
}

function showOrder() {
  const c = customer;
  const card = part(c.section, ".order");
  const order = c.current && c.book.get(c.current);
  if (!order) {
    card.hidden = true;
    return;
  }
  const actions = [];
  if (order.status === "pending_payment" && order.payment) {
    actions.push(el("button", { type: "button", onclick: () => pay(order) }, "Pay at the sandbox"));
  }
  if (order.status === "pending_payment" || order.status === "paid") {
    actions.push(
      el("button", { type: "button", class: "quiet", onclick: () => cancel(order) }, "Cancel"),
    );
  }
  const eta = order.eta && !CLOSED.has(order.status) && order.status !== "pending_payment";
  const parts = [
    el(
      "div",
      { class: "row", "data-order-id": order.id },
      el("b", { class: "mono" }, shortId(order.id)),
      statusOf(order),
    ),
    el("p", {}, orderLines(order), " · ", fen(order.amounts && order.amounts.total_fen)),
    order.rider && order.rider.id
      ? el("p", { class: "small" }, `rider ${order.rider.id}`)
      : null,
    eta
      ? el(
          "p",
          { class: "eta" },
          order.status === "picked_up"
            ? `ETA: at your door by ${clock(order.eta.delivery_at)}`
            : `ETA: rider at the counter by ${clock(order.eta.pickup_at)}, ` +
                `at your door by ${clock(order.eta.delivery_at)}`,
        )
      : null,
    c.note && order.status === "pending_payment" ? el("p", { class: "muted small" }, c.note) : null,
    el("div", { class: "row" }, ...actions),
  ];
  card.replaceChildren(...parts.filter(Boolean));
  card.hidden = false;
  paintCustomer();
}

function drawCustomerMap() {
  const c = customer;
  const map = customerMap;
  map.clear("#f4f2ee");
  const order = c.current && c.book.get(c.current);
  const merchant = order ? c.merchants.get(order.merchant_id) : c.merchant;
  const home = order && order.delivery ? [order.delivery.lat, order.delivery.lng] : null;
  const riderAt = order && order.rider && order.rider.lat !== null && order.rider.lat !== undefined
    ? [order.rider.lat, order.rider.lng]
    : null;
  const points = [merchant && [merchant.lat, merchant.lng], home, riderAt].filter(Boolean);
  frame(map, points);
  if (merchant) {
    map.square(merchant.lat, merchant.lng, 10, "#37474f");
    map.label(merchant.lat, merchant.lng, merchant.name);
  }
  if (home) {
    map.dot(home[0], home[1], 6, "#1565c0");
    map.label(home[0], home[1], "you");
  }
  if (riderAt) {
    const next = order.status === "picked_up" || !merchant ? home : [merchant.lat, merchant.lng];
    if (next) map.line([riderAt, next], "#fb8c00", 1.5, [5, 4]);
    map.dot(riderAt[0], riderAt[1], 6, "#fb8c00", "#fff");
    map.label(riderAt[0], riderAt[1], "rider", "#e65100", 8, 14);
  }
  map.scaleBar();
}

// -- the merchant ----------------------------------------------------------------------------

const merchant = {
  section: document.getElementById("merchant"),
  id: param("merchant", "m_002"),
  token: null,
  book: new OrderBook(),
  arrived: [], // order ids, oldest first, as the stream told them
  fetchSoon: new Map(),
  errors: new Map(),
};
const merchantCards = keyedList(part(merchant.section, ".orders"), drawMerchantCard);

async function startMerchant() {
  const m = merchant;
  m.token = await signIn(m.section, "merchant", m.id);
  m.sync = new Sync({
    token: m.token,
    onEvent: onMerchantEvent,
    onResync: (orders) => {
      for (const order of orders) arrive(m.book.merge(order));
      showMerchant();
    },
    onStatus: statusBadge(part(m.section, ".badge")),
  });
  m.sync.start();
}

function arrive(order) {
  if (!merchant.arrived.includes(order.id)) merchant.arrived.push(order.id);
  return order;
}

function onMerchantEvent(event) {
  const m = merchant;
  if (!event.order_id) return;
  const order = m.book.apply(event);
  if (!order) return;
  arrive(order);
  fetchSoon(m, order.id, showMerchant);
  showMerchant();
}

// Reads an order once the events about it settle: a backlog brings several at once.
function fetchSoon(terminal, orderId, then) {
  if (terminal.fetchSoon.has(orderId)) return;
  terminal.fetchSoon.set(
    orderId,
    setTimeout(async () => {
      terminal.fetchSoon.delete(orderId);
      try {
        const order = await call("GET", `/v1/orders/${encodeURIComponent(orderId)}`, {
          token: terminal.token,
        });
        terminal.book.merge(order);
      } catch (err) {
        part(terminal.section, ".error").textContent = describe(err);
      }
      then();
    }, 50),
  );
}

function showMerchant() {
  const m = merchant;
  const shown = m.arrived.slice(-ORDERS_SHOWN).map((id) => m.book.get(id));
  merchantCards(shown);
  part(m.section, ".empty").hidden = shown.length > 0;
}

function drawMerchantCard(order) {
  const m = merchant;
  const error = el("p", { class: "error" }, m.errors.get(order.id) || "");
  const act = (path, body) => async () => {
    try {
      const changed = await call(
        "POST",
        `/v1/merchant/orders/${encodeURIComponent(order.id)}/${path}`,
        { token: m.token, body: body ? body() : undefined, key: newKey() },
      );
      m.errors.delete(order.id);
      m.book.merge(changed);
    } catch (err) {
      m.errors.set(order.id, describe(err));
      error.textContent = describe(err);
    }
    showMerchant();
  };
  const actions = [];
  if (order.status === "paid") {
    const prep = el("input", {
      type: "number",
      min: "0",
      max: "240",
      placeholder: order.prep_minutes || "usual",
      "aria-label": "preparation minutes",
      class: "narrow",
    });
    const reason = el("input", { value: "too busy", "aria-label": "reason", class: "narrow" });
    actions.push(
      prep,
      el(
        "button",
        {
          type: "button",
          onclick: act("accept", () => (prep.value ? { prep_minutes: Number(prep.value) } : {})),
        },
        "Accept",
      ),
      reason,
      el(
        "button",
        {
          type: "button",
          class: "quiet",
          onclick: act("reject", () => ({ reason: reason.value || "too busy" })),
        },
        "Reject",
      ),
    );
  } else if (order.status === "accepted") {
    actions.push(el("button", { type: "button", onclick: act("ready") }, "Ready"));
  }
  // The accept deadline shows only when the order carries one.
  const deadline =
    order.status === "paid" && order.accept_deadline
      ? el("span", {
          class: "countdown",
          "data-until": order.accept_deadline,
          "data-label": "answer within",
        })
      : null;
  return el(
    "li",
    { class: "card", "data-order-id": order.id },
    el(
      "div",
      { class: "row" },
      el("b", { class: "mono" }, shortId(order.id)),
      statusOf(order),
      deadline,
    ),
    el(
      "p",
      {},
      orderLines(order),
      " · ",
      fen(order.amounts && order.amounts.total_fen),
      order.placed_at
        ? el("span", { class: "muted small" }, ` placed ${clock(order.placed_at)}`)
        : "",
    ),
    actions.length ? el("div", { class: "row" }, ...actions) : null,
    error,
  );
}

// -- the rider -------------------------------------------------------------------------------

const rider = {
  section: document.getElementById("rider"),
  id: param("rider", "r_demo"),
  token: null,
  book: new OrderBook(),
  offers: new Map(), // offer id -> the offer event's data
  stops: new Map(), // order id -> {pickup, dropoff}, from its offer
  jobs: [],
  fetchSoon: new Map(),
  online: false,
  at: [numberParam("rider_lat", 30.2785), numberParam("rider_lng", 120.1208)],
  sentAt: 0,
  moving: false,
};
const riderMap = new CanvasMap(part(rider.section, ".map"), {
  lat: rider.at[0],
  lng: rider.at[1],
  radiusM: 2000,
});
const paintRider = painter(drawRiderMap);
riderMap.onResize = paintRider;
const riderJobs = keyedList(part(rider.section, ".jobs"), drawJob);

async function startRider() {
  const r = rider;
  const form = part(r.section, ".position");
  form.elements.lat.value = r.at[0];
  form.elements.lng.value = r.at[1];
  r.token = await signIn(r.section, "rider", r.id);
  part(r.section, ".online").addEventListener("click", () => setOnline(true));
  part(r.section, ".offline").addEventListener("click", () => setOnline(false));
  r.sync = new Sync({
    token: r.token,
    onEvent: onRiderEvent,
    onResync: (orders) => {
      for (const order of orders) r.book.merge(order);
      showRider();
    },
    onStatus: statusBadge(part(r.section, ".badge")),
  });
  r.sync.start();
  setInterval(ride, 1000);
  showRider();
}

function riderError(err) {
  part(rider.section, ".error").textContent = err ? describe(err) : "";
}

async function setOnline(online) {
  const r = rider;
  const form = part(r.section, ".position");
  r.at = [Number(form.elements.lat.value), Number(form.elements.lng.value)];
  try {
    await call("POST", "/v1/riders/me/status", {
      token: r.token,
      body: { online, lat: r.at[0], lng: r.at[1] },
    });
    r.online = online;
    r.sentAt = Date.now();
    riderError(null);
  } catch (err) {
    riderError(err);
  }
  showRider();
}

function onRiderEvent(event) {
  const r = rider;
  if (event.type === "offer") {
    const offer = event.data;
    r.stops.set(offer.order_id, {
      pickup: [offer.pickup.lat, offer.pickup.lng],
      dropoff: [offer.dropoff.lat, offer.dropoff.lng],
    });
    if (secondsUntil(offer.expires_at) > 0) r.offers.set(offer.offer_id, offer);
    showRider();
    return;
  }
  if (!event.order_id) return;
  const order = r.book.apply(event);
  if (!order) return;
  if (event.type === "rider_assigned") {
    for (const [id, offer] of r.offers) if (offer.order_id === event.order_id) r.offers.delete(id);
  }
  fetchSoon(r, order.id, showRider);
  showRider();
}

async function answer(offer, accept) {
  const r = rider;
  try {
    const verb = accept ? "accept" : "decline";
    const path = `/v1/rider/offers/${encodeURIComponent(offer.offer_id)}/${verb}`;
    await call("POST", path, { token: r.token, key: newKey() });
    riderError(null);
    if (accept) fetchSoon(r, offer.order_id, showRider);
  } catch (err) {
    riderError(err);
  }
  r.offers.delete(offer.offer_id);
  showRider();
}

async function carry(order, step) {
  const r = rider;
  try {
    const changed = await call("POST", `/v1/rider/orders/${encodeURIComponent(order.id)}/${step}`, {
      token: r.token,
      key: newKey(),
    });
    r.book.merge(changed);
    riderError(null);
  } catch (err) {
    riderError(err);
  }
  showRider();
}

function isMine(order) {
  return (order.rider && order.rider.id === rider.id) || order.rider_id === rider.id;
}

function stopsOf(order) {
  const known = rider.stops.get(order.id);
  const door = order.delivery && [order.delivery.lat, order.delivery.lng];
  const dropoff = door || (known && known.dropoff);
  return { pickup: known && known.pickup, dropoff };
}

// Where the rider goes next: the counter of an order not picked up yet, else a door.
function nextStop() {
  const open = rider.book.values().filter((o) => isMine(o) && !CLOSED.has(o.status));
  for (const order of open) {
    const { pickup } = stopsOf(order);
    if (order.status !== "picked_up" && pickup) return pickup;
  }
  for (const order of open) {
    const { dropoff } = stopsOf(order);
    if (order.status === "picked_up" && dropoff) return dropoff;
  }
  return null;
}

async function ride() {
  const r = rider;
  for (const [id, offer] of r.offers) {
    if (secondsUntil(offer.expires_at) <= 0) {
      r.offers.delete(id);
      showRider();
    }
  }
  if (!r.online || r.moving) return;
  const target = part(r.section, ".ride").checked ? nextStop() : null;
  let moved = false;
  if (target) {
    const left = metersBetween(r.at, target);
    if (left > 5) {
      const share = Math.min(1, RIDE_M_PER_S / left);
      r.at = [r.at[0] + (target[0] - r.at[0]) * share, r.at[1] + (target[1] - r.at[1]) * share];
      moved = true;
    }
  }
  if (!moved && Date.now() - r.sentAt < HEARTBEAT_MS) return;
  r.moving = true;
  try {
    await call("POST", "/v1/riders/me/location", {
      token: r.token,
      body: { lat: r.at[0], lng: r.at[1] },
    });
    r.sentAt = Date.now();
  } catch (err) {
    riderError(err);
  } finally {
    r.moving = false;
  }
  showRider();
}

function showRider() {
  const r = rider;
  const form = part(r.section, ".position");
  if (followsRide(form)) {
    form.elements.lat.value = r.at[0].toFixed(6);
    form.elements.lng.value = r.at[1].toFixed(6);
  }
  part(r.section, ".state").textContent = r.online
    ? `online at ${r.at[0].toFixed(5)}, ${r.at[1].toFixed(5)}`
    : "offline";
  part(r.section, ".state").dataset.online = String(r.online);
  // Offers are drawn again only when they change, so a press on a button is never lost.
  const offerIds = [...r.offers.keys()].join(",");
  if (offerIds !== r.offersDrawn) {
    r.offersDrawn = offerIds;
    part(r.section, ".offers").replaceChildren(...[...r.offers.values()].map(drawOffer));
  }
  riderJobs(r.book.values().filter(isMine).slice(-ORDERS_SHOWN));
  paintRider();
}

function drawOffer(offer) {
  const pickup = [offer.pickup.lat, offer.pickup.lng];
  const dropoff = [offer.dropoff.lat, offer.dropoff.lng];
  const km = (a, b) => (metersBetween(a, b) / 1000).toFixed(1);
  return el(
    "div",
    { class: "card offer", "data-offer-id": offer.offer_id, "data-order-id": offer.order_id },
    el(
      "div",
      { class: "row" },
      el("b", {}, "New order "),
      el("span", { class: "mono" }, shortId(offer.order_id)),
    ),
    el(
      "p",
      { class: "small" },
      `${km(rider.at, pickup)} km to the counter, ${km(pickup, dropoff)} km to the door`,
    ),
    el("span", { class: "countdown", "data-until": offer.expires_at, "data-label": "expires in" }),
    el(
      "div",
      { class: "row" },
      el("button", { type: "button", onclick: () => answer(offer, true) }, "Accept offer"),
      el(
        "button",
        { type: "button", class: "quiet", onclick: () => answer(offer, false) },
        "Decline",
      ),
    ),
  );
}

function drawJob(order) {
  let action = null;
  if (order.status === "ready") {
    action = el("button", { type: "button", onclick: () => carry(order, "pickup") }, "Pick up");
  } else if (order.status === "accepted") {
    const waiting = { type: "button", disabled: true, title: "the food is not ready yet" };
    action = el("button", waiting, "Pick up");
  } else if (order.status === "picked_up") {
    action = el("button", { type: "button", onclick: () => carry(order, "deliver") }, "Deliver");
  }
  return el(
    "li",
    { class: "card", "data-order-id": order.id },
    el("div", { class: "row" }, el("b", { class: "mono" }, shortId(order.id)), statusOf(order)),
    order.delivery
      ? el("p", { class: "small" }, `to ${order.delivery.address || "the door"}`)
      : null,
    action ? el("div", { class: "row" }, action) : null,
  );
}

// The position fields follow the ride, unless the user is typing a new place into them.
function followsRide(form) {
  return !form.contains(document.activeElement) || document.activeElement.type !== "number";
}

function drawRiderMap() {
  const r = rider;
  const map = riderMap;
  map.clear("#f4f2ee");
  const points = [r.at];
  const open = r.book.values().filter((o) => isMine(o) && !CLOSED.has(o.status));
  for (const order of open) {
    const { pickup, dropoff } = stopsOf(order);
    if (pickup && order.status !== "picked_up") points.push(pickup);
    if (dropoff) points.push(dropoff);
  }
  for (const offer of r.offers.values()) {
    points.push([offer.pickup.lat, offer.pickup.lng], [offer.dropoff.lat, offer.dropoff.lng]);
  }
  frame(map, points);
  for (const offer of r.offers.values()) {
    const pickup = [offer.pickup.lat, offer.pickup.lng];
    const dropoff = [offer.dropoff.lat, offer.dropoff.lng];
    map.line([r.at, pickup, dropoff], "#1565c0", 1, [4, 4]);
    map.square(pickup[0], pickup[1], 9, "#1565c0");
  }
  for (const order of open) {
    const { pickup, dropoff } = stopsOf(order);
    const color = STATUS_COLORS[order.status] || "#999";
    if (pickup && order.status !== "picked_up") {
      map.square(pickup[0], pickup[1], 10, "#37474f");
      map.label(pickup[0], pickup[1], "counter", "#37474f", 8, 14);
    }
    if (dropoff) {
      map.dot(dropoff[0], dropoff[1], 6, color);
      map.label(dropoff[0], dropoff[1], "door", "#37474f", 8, 14);
    }
  }
  map.dot(r.at[0], r.at[1], 7, r.online ? "#fb8c00" : "#9e9e9e", "#fff");
  map.label(r.at[0], r.at[1], "you");
  map.scaleBar();
}

// -- all three --------------------------------------------------------------------------------

startCountdowns();
startCustomer();
startMerchant();
startRider();
