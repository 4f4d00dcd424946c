// The venue web client: log in over REST, then live over MQTT (realtime.js). Views: the
// board (everyone), the booking form and "my reservations" (players), notifications, and the
// admin panel (admins). ?wall=1 is the wall-screen mode: the board only, large, no chrome.
// ?fallback=SECONDS sets how long the live link may be down before polling REST (default 8).
//
// A session is built once per page: logging out, or a token that is no longer accepted,
// clears what the page holds of the account and loads the page again, which is the one sure
// way to drop every listener, timer and connection of that session.

import { AdminPanel } from "./admin.js";
import { Board, BoardView } from "./board.js";
import { Booking, requestId } from "./booking.js";
import { errorText, outcomeUnknown } from "./errors.js";
import { startFloorViews } from "./floorviews.js";
import { applyI18n, clock, currentLocale, dateTime, onLocaleChange, range, setLocale, t } from "./i18n.js";
import { icon } from "./icons.js";
import { Notifications } from "./notifications.js";
import { PartyBooking } from "./party.js";
import { Realtime } from "./realtime.js";
import { MyReservations } from "./reservations.js";
import { Rest } from "./rest.js";
import { Waitlist } from "./waitlist.js";
import { HelpCall, StaffDesk } from "./help.js";

const $ = (selector) => document.querySelector(selector);
const params = new URLSearchParams(location.search);
const WALL = params.get("wall") === "1";
const FALLBACK_AFTER = Number(params.get("fallback")) || 8;
const POLL_EVERY = 5;
const LOGIN_NOTICE = "plaza.login.notice"; // why the last session ended, for the login form
const PLAYER_DATA = ["plaza.notifications."]; // localStorage keys with an account's data

const rest = new Rest();
let session = null;
let ending = false;
let localeChosenBeforeLogin = false;

function flash(text, type = "info") {
  const el = document.createElement("div");
  el.className = "toast";
  el.dataset.type = type;
  const p = document.createElement("p");
  p.textContent = text;
  el.append(p);
  $("#toasts").append(el);
  setTimeout(() => el.remove(), type === "error" ? 8000 : 4000);
  $(type === "error" ? "#live-assertive" : "#live-polite").textContent = text;
}

function show(id) {
  for (const view of ["#view-login", "#view-board", "#view-admin"]) $(view).hidden = view !== id;
  for (const b of document.querySelectorAll("#nav [data-view]")) {
    b.setAttribute("aria-pressed", String(`#view-${b.dataset.view}` === id));
  }
}

// -- login -------------------------------------------------------------------------------------
function showLogin() {
  $("#nav").hidden = true;
  $("#who").hidden = true;
  $("#conn").hidden = true;
  const reason = sessionStorage.getItem(LOGIN_NOTICE) || (rest.lapsed ? "expired" : null);
  sessionStorage.removeItem(LOGIN_NOTICE);
  const notice = $("#login-notice");
  notice.hidden = reason !== "expired";
  if (!notice.hidden) {
    notice.dataset.i18n = "login.expired"; // relabelled by a language switch
    notice.textContent = t("login.expired");
  }
  show("#view-login");
  $("#login-form [name=username]").focus();
}

$("#login-form").addEventListener("submit", async (e) => {
  e.preventDefault();
  const form = e.target;
  const button = form.querySelector("button[type=submit]");
  const error = $("#login-error");
  error.hidden = true;
  $("#login-notice").hidden = true;
  button.disabled = true;
  button.textContent = t("login.busy");
  try {
    const user = await rest.login(form.username.value.trim(), form.password.value);
    form.reset();
    if (localeChosenBeforeLogin && user.locale !== currentLocale()) {
      saveLocale(currentLocale());
    } else if (user.locale) {
      setLocale(user.locale);
    }
    startSession(rest.user);
  } catch (err) {
    // only a refused login means a wrong password; a network or server error says what it is
    const key = { invalid_credentials: "login.failed", login_rate_limited: "login.rate_limited" }[err.code];
    error.textContent = key ? t(key) : errorText(err);
    error.hidden = false;
  } finally {
    button.disabled = false;
    button.textContent = t("login.submit");
  }
});

// -- language ----------------------------------------------------------------------------------
async function saveLocale(locale) {
  if (!rest.user) return;
  try {
    rest.updateUser(await rest.patch("/me", { locale }));
  } catch (err) {
    console.warn("could not store the language", err);
  }
}

$("#lang").addEventListener("change", (e) => {
  setLocale(e.target.value);
  if (rest.user) saveLocale(e.target.value);
  else localeChosenBeforeLogin = true;
});

onLocaleChange(() => {
  $("#lang").value = currentLocale();
  if (!session) return;
  session.boardView.render();
  session.mine.render();
  session.waitlist.relabel();
  session.help?.relabel();
  session.desk?.relabel();
  renderStanding();
  session.notifications.render();
  session.admin?.render();
  session.floor.relabel();
  session.booking.relabel();
  renderConnection();
  renderWho();
  renderNotice();
});

// -- connection indicator and the degraded mode ------------------------------------------------
function renderConnection() {
  if (!session) return;
  const { realtime } = session;
  let state = realtime.state;
  if (state === "degraded" && session.pollOk === false) state = "offline";
  const el = $("#conn");
  el.hidden = false;
  el.dataset.state = state;
  const retry = Math.max(1, Math.round(session.retryIn || 0));
  const texts = {
    connecting: t("conn.connecting"),
    live: t("conn.live"),
    reconnecting: t("conn.reconnecting", { seconds: retry }),
    degraded: t("conn.degraded", { seconds: POLL_EVERY }),
    offline: t("conn.offline"),
  };
  el.querySelector(".conn-icon").innerHTML = icon(state === "offline" ? "offline" : state);
  el.querySelector(".conn-text").textContent = texts[state];
}

/** One round of the degraded mode. An answer that comes after the live link is back (or
 * after polling stopped) is dropped: the retained board it would overwrite is newer. */
async function poll() {
  const s = session;
  if (!s) return;
  const round = s.pollRound;
  const overtaken = () => session !== s || s.pollRound !== round || s.realtime.live;
  try {
    const devices = await rest.get("/devices");
    if (overtaken()) return;
    s.board.applyRest(devices);
    if (!s.admin) await Promise.all([s.mine.load(rest), s.waitlist.load(rest)]);
    else await s.admin.resync();
    if (overtaken()) return;
    s.pollOk = true;
  } catch (err) {
    if (overtaken()) return;
    s.pollOk = false;
  }
  renderConnection();
}

function startPolling() {
  if (!session || session.poller) return;
  poll();
  session.poller = setInterval(poll, POLL_EVERY * 1000);
}

function stopPolling() {
  if (!session) return;
  clearInterval(session.poller);
  session.poller = null;
  session.pollOk = null;
  session.pollRound += 1; // a round still on its way is dropped
}

// -- notices -----------------------------------------------------------------------------------
function renderNotice() {
  const n = session?.notice;
  const box = $("#notice");
  if (!n || sessionStorage.getItem("plaza.notice.dismissed") === n.id) {
    box.hidden = true;
    return;
  }
  const en = currentLocale() === "en";
  box.dataset.priority = n.priority;
  $("#notice-title").textContent = (en && n.title_en) || n.title;
  $("#notice-message").textContent = (en && n.message_en) || n.message;
  box.hidden = false;
}

$("#notice-dismiss").addEventListener("click", () => {
  if (session?.notice) sessionStorage.setItem("plaza.notice.dismissed", session.notice.id);
  renderNotice();
});

// -- the signed-in session ---------------------------------------------------------------------
function renderWho() {
  const user = rest.user;
  if (!user) return;
  const role = user.role === "admin" ? ` (${t("nav.role.admin")})` : "";
  $("#whoami").textContent = t("nav.user", { user: user.username }) + role;
}

function nameOf(device) {
  return session?.board.get(device)?.name || device;
}

/** A reservation command (MQTT while live, else REST); resolves with the reply. `key` names
 * the action, so that trying it again after an unknown outcome sends the same request_id
 * (the idempotency key: applied once). */
const requestIds = new Map();
function command(device, body, key) {
  let id = requestIds.get(key);
  if (!id) {
    id = requestId(session.realtime.slot || "web");
    requestIds.set(key, id);
  }
  return session.booking.command(device, { request_id: id, ...body });
}

/** A command whose answer did not come: say so and look again at the list. */
function unconfirmed() {
  flash(t("error.unconfirmed"));
  session.mine.load(rest).catch(() => {});
}

async function cancelReservation(id) {
  const r = session.mine.items.get(id);
  if (!r) return;
  session.mine.setBusy(id, true);
  const key = `cancel:${id}`;
  const reply = await command(r.device_id, { op: "cancel", reservation_id: id }, key);
  if (!outcomeUnknown(reply.error)) requestIds.delete(key);
  if (reply.ok) {
    session.mine.upsert(reply.reservation);
    flash(t("mine.cancelled"));
    return;
  }
  session.mine.setBusy(id, false);
  if (outcomeUnknown(reply.error)) unconfirmed();
  else flash(errorText(reply.error), "error");
}

/** "+30 min" in "My reservations": extend the booking if the machine is free that long. */
async function extendReservation(id) {
  const r = session.mine.items.get(id);
  if (!r) return;
  session.mine.setBusy(id, true);
  const ends_at = r.ends_at + 30 * 60;
  const key = `extend:${id}:${r.ends_at}`;
  const reply = await command(r.device_id, { op: "extend", reservation_id: id, ends_at }, key);
  if (!outcomeUnknown(reply.error)) requestIds.delete(key);
  session.mine.setBusy(id, false);
  if (reply.ok) {
    session.mine.upsert(reply.reservation);
    flash(t("mine.extended", { name: nameOf(r.device_id), range: range(r.starts_at, ends_at) }));
  } else if (outcomeUnknown(reply.error)) unconfirmed();
  else flash(errorText(reply.error), "error");
}

/** A session_ending notification's offer: extend the booking to the latest end it allows. */
async function extendToOffer(offer, reservation) {
  const id = offer.reservation_id;
  const device = session.mine.items.get(id)?.device_id || reservation?.device_id;
  if (!device) return false;
  const key = `extend:${id}:${offer.until}`;
  const body = { op: "extend", reservation_id: id, ends_at: offer.until };
  const reply = await command(device, body, key);
  if (!outcomeUnknown(reply.error)) requestIds.delete(key);
  if (reply.ok) {
    session.mine.upsert(reply.reservation);
    flash(t("notif.extended", { time: clock(offer.until) }));
    return true;
  }
  if (outcomeUnknown(reply.error)) unconfirmed();
  else flash(errorText(reply.error), "error");
  return false;
}

async function cancelParty(partyId) {
  const key = `cancel-party:${partyId}`;
  const reply = await command(null, { op: "cancel_party", party_id: partyId }, key);
  if (!outcomeUnknown(reply.error)) requestIds.delete(key);
  if (reply.ok) {
    for (const r of reply.reservations || []) session.mine.upsert(r);
    flash(t("mine.party_cancelled"));
  } else if (outcomeUnknown(reply.error)) unconfirmed();
  else flash(errorText(reply.error), "error");
}

/** The no-show policy as the player's account says it (GET /me): a suspension, and until when. */
async function loadStanding() {
  if (!session || session.admin) return;
  try {
    session.standing = await rest.get("/me");
  } catch {
    return;
  }
  renderStanding();
}

function renderStanding() {
  const el = $("#standing");
  const me = session?.standing;
  if (me?.suspended_until) {
    const until = dateTime(Date.parse(me.suspended_until) / 1000);
    el.textContent = t("standing.suspended", { until });
    el.dataset.state = "suspended";
    el.hidden = false;
  } else if (me?.strikes) {
    el.textContent = t("standing.strikes", { strikes: me.strikes });
    el.dataset.state = "strikes";
    el.hidden = false;
  } else {
    el.hidden = true;
  }
}

/** A rebook offer (the machine went down under a reservation): book the offered machine for
 * the rest of the slot, replacing the old reservation in the same decision (`replaces`), so
 * the player never holds both and never loses both. */
async function takeOffer(offer) {
  const key = `offer:${offer.replaces}:${offer.device_id}`;
  const starts_at = offer.starts_at_sent ?? Math.max(offer.starts_at, Date.now() / 1000);
  offer.starts_at_sent = starts_at; // a retry is the same request, slot included
  const reply = await command(
    offer.device_id,
    { op: "reserve", starts_at, ends_at: offer.ends_at, replaces: offer.replaces },
    key,
  );
  if (!outcomeUnknown(reply.error)) {
    requestIds.delete(key);
    delete offer.starts_at_sent;
  }
  if (!reply.ok) {
    if (outcomeUnknown(reply.error)) unconfirmed();
    else flash(errorText(reply.error), "error");
    return false;
  }
  const old = session.mine.items.get(offer.replaces);
  if (old) session.mine.upsert({ ...old, status: "cancelled" });
  session.mine.upsert(reply.reservation);
  flash(t("notif.offer_done", { name: offer.name }));
  return true;
}

function startSession(user) {
  const admin = user.role === "admin";
  const board = new Board();
  const realtime = new Realtime(rest, { fallbackAfter: FALLBACK_AFTER, admin });
  const boardView = new BoardView($("#board"), board, {
    interactive: !WALL && !admin,
    onSelect: (device) => session.booking.open(device),
    summary: $("#board-count"),
  });
  const mine = new MyReservations($("#mine"), {
    nameOf,
    onCancel: cancelReservation,
    onExtend: extendReservation,
    onCancelParty: cancelParty,
  });
  const notifications = new Notifications({
    list: $("#notif-list"),
    toasts: $("#toasts"),
    polite: $("#live-polite"),
    assertive: $("#live-assertive"),
    badge: $("#unread"),
    user: user.username,
    onOffer: takeOffer,
    onTake: (offer) => session.waitlist.take(offer),
    onExtend: extendToOffer,
  });
  const booking = new Booking($("#booking"), {
    board,
    realtime,
    rest,
    mine,
    notify: (text) => flash(text),
    fail: (text) => flash(text, "error"),
  });
  const waitlist = new Waitlist($("#waitlist"), {
    board,
    command,
    nameOf,
    notify: (text) => flash(text),
    fail: (text) => flash(text, "error"),
    onTaken: (reservation) => {
      if (!reservation) return;
      mine.upsert(reservation);
      notifications.offerTaken(reservation.id); // a taken offer keeps its id: its toast goes
    },
  });
  const party = new PartyBooking($("#party"), {
    board,
    command: (device, body) => booking.command(device, body),
    mine,
    nameOf,
    notify: (text) => flash(text),
  });
  const help = admin
    ? null
    : new HelpCall($("#help"), {
        board,
        realtime,
        rest,
        mine,
        nameOf,
        notify: (text) => flash(text),
        fail: (text) => flash(text, "error"),
      });
  const desk = admin
    ? new StaffDesk($("#view-admin"), {
        board,
        rest,
        nameOf,
        notify: (text) => flash(text),
        fail: (err) => flash(errorText(err), "error"),
      })
    : null;
  const adminPanel = admin
    ? new AdminPanel($("#view-admin"), {
        rest,
        nameOf,
        notify: (text) => flash(text),
        fail: (err) => flash(errorText(err), "error"),
      })
    : null;
  session = {
    user,
    board,
    boardView,
    realtime,
    mine,
    notifications,
    booking,
    waitlist,
    party,
    help,
    desk,
    standing: null,
    admin: adminPanel,
    poller: null,
    pollOk: null,
    pollRound: 0,
    notice: null,
    retryIn: 0,
    connects: 0,
    floor: startFloorViews({
      board,
      rest,
      admin,
      wall: WALL,
      fail: (err) => flash(errorText(err), "error"),
    }),
  };
  mine.addEventListener("change", () => boardView.setMine(mine.ids()));

  realtime.addEventListener("state", (e) => {
    session.retryIn = e.detail.retryIn || 0;
    if (e.detail.state === "degraded") startPolling();
    if (e.detail.state === "live") stopPolling();
    renderConnection();
  });
  realtime.addEventListener("connected", () => {
    // Resync: the retained board arrives by itself; the REST backlog fills what it cannot.
    session.connects += 1;
    if (!admin) mine.load(rest).catch(() => {});
    if (!admin) waitlist.load(rest).catch(() => {});
    help?.load().catch(() => {});
    desk?.load().catch(() => {});
    loadStanding();
    notifications.loadBacklog(rest, { toast: session.connects > 1 });
    adminPanel?.resync();
    session.floor.reload();
    booking.settleAll();
  });
  realtime.addEventListener("board", (e) => board.apply(e.detail.device, e.detail.entry));
  realtime.addEventListener("notice", (e) => {
    session.notice = e.detail;
    renderNotice();
  });
  realtime.addEventListener("reservation-event", (e) => {
    mine.applyEvent(e.detail);
    booking.onEvent(e.detail);
    adminPanel?.onEvent(e.detail);
  });
  realtime.addEventListener("device-event", () => adminPanel?.onDeviceEvent());
  realtime.addEventListener("floor-event", (e) => session.floor.apply(e.detail));
  realtime.addEventListener("waitlist", (e) => waitlist.apply(e.detail?.entries || []));
  realtime.addEventListener("waitlist-event", () => adminPanel?.onWaitlistEvent());
  realtime.addEventListener("alert", (e) => adminPanel?.onAlert(e.detail));
  realtime.addEventListener("alert", (e) => desk?.onAlert(e.detail));
  realtime.addEventListener("notification", (e) => {
    const n = e.detail;
    notifications.add(n);
    help?.onNotification(n);
    if (n.reservation && !admin) mine.upsert(n.reservation);
    if (n.type === "booking_suspended" || n.type === "suspension_lifted") loadStanding();
  });
  realtime.addEventListener("reply", (e) => {
    // Replies to this player's other tabs (their tree is ours too) keep this list current.
    const { reply, ours } = e.detail;
    if (!ours) booking.onReply(reply); // a late answer to an unconfirmed booking settles it
    if (!ours && reply.ok && reply.reservation && !admin) mine.upsert(reply.reservation);
  });

  $("#nav").hidden = WALL;
  $("#nav-admin").hidden = !admin;
  $('#nav [data-view="board"]').hidden = !admin; // players have one view
  $("#who").hidden = WALL;
  $("#side-mine").hidden = admin || WALL;
  document.body.dataset.role = user.role;
  renderWho();
  show("#view-board");
  boardView.render();
  mine.render();
  waitlist.relabel();
  help?.relabel();
  desk?.relabel();
  if (!admin) mine.load(rest).catch(() => {});
  if (!admin) waitlist.load(rest).catch(() => {});
  help?.load().catch(() => {});
  desk?.load().catch(() => {});
  loadStanding();
  notifications.loadBacklog(rest, { toast: false });
  adminPanel?.start();
  adminPanel?.render();
  session.floor.reload();
  realtime.start();
  renderConnection();
  session.ticker = setInterval(() => {
    boardView.tick();
    waitlist.tick();
  }, 1000);
  $("#party-open").onclick = () => party.open();
}

/** The end of a session (logging out, or a token no longer accepted): stop what runs, forget
 * the account's data in this browser (notifications hold check-in codes), then load the page
 * again. `reason` is shown on the login form ("expired"). */
function endSession(reason) {
  if (ending) return;
  ending = true;
  if (reason === null) rest.revoke(session?.realtime.slot); // logging out, not an expiry
  if (session) {
    session.realtime.stop();
    session.admin?.stop();
    session.notifications.forget();
    stopPolling();
    clearInterval(session.ticker);
  }
  rest.logout();
  for (const key of Object.keys(localStorage)) {
    if (PLAYER_DATA.some((prefix) => key.startsWith(prefix))) localStorage.removeItem(key);
  }
  if (reason) sessionStorage.setItem(LOGIN_NOTICE, reason);
  location.reload();
}

rest.addEventListener("expired", () => endSession("expired"));
$("#logout").addEventListener("click", () => endSession(null));

// A background tab's timers run late: coming back refreshes a token near its end at once.
document.addEventListener("visibilitychange", () => {
  if (document.visibilityState === "visible") rest.wakeUp();
});
addEventListener("focus", () => rest.wakeUp());
addEventListener("online", () => rest.wakeUp());

for (const button of document.querySelectorAll("#nav [data-view]")) {
  button.addEventListener("click", () => {
    show(`#view-${button.dataset.view}`);
    if (button.dataset.view === "admin") session?.admin?.resync();
  });
}

// -- the notification drawer -------------------------------------------------------------------
function setDrawer(open) {
  const drawer = $("#notifications");
  drawer.hidden = !open;
  $("#nav-bell").setAttribute("aria-expanded", String(open));
  if (open) {
    session?.notifications.markAllRead(rest);
    $("#notif-title").focus();
  } else {
    $("#nav-bell").focus();
  }
}

$("#nav-bell").addEventListener("click", () => setDrawer($("#notifications").hidden));
$("#notif-close").addEventListener("click", () => setDrawer(false));
document.addEventListener("keydown", (e) => {
  if (e.key === "Escape" && !$("#notifications").hidden) setDrawer(false);
});

// -- start -------------------------------------------------------------------------------------
if (WALL) document.body.classList.add("wall");
$("#nav-bell .bell").innerHTML = icon("bell");
$("#lang").value = currentLocale();
applyI18n();
if (rest.user) startSession(rest.user);
else showLogin();
