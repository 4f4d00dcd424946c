// What went wrong, in words: one text for an error whether it came as a problem+json body
// (an ApiError from rest.js: `code`, `body.conflict`) or in a bridge reply over MQTT
// (`{code, conflict}`). A conflict names the slot it collides with, in local time; a party's
// conflict names its seat; a suspension says until when.

import { dateTime, has, range, t } from "./i18n.js";

/** Outcomes that do not say whether the command was applied: the request may have reached
 * the bridge and its answer got lost. The entry stays, marked unconfirmed, and the same
 * request (same request_id: the idempotency key) settles it later. */
const UNKNOWN = new Set([
  "network",
  "timeout",
  "bridge_timeout",
  "broker_timeout",
  "broker_unavailable",
  "bridge_error",
]);

export function outcomeUnknown(error) {
  if (!error) return false;
  return UNKNOWN.has(error.code) || error.status === 0 || error.status >= 500;
}

/** The slot a refusal collides with: `{reservation_id, starts_at, ends_at, status}`, its
 * times in Unix seconds (REST gives ISO 8601, the bridge's MQTT replies Unix seconds). */
export function conflictOf(error) {
  const c = error?.conflict ?? error?.body?.conflict ?? null;
  if (!c) return null;
  const seconds = (v) => (typeof v === "string" ? Date.parse(v) / 1000 : v);
  return { ...c, starts_at: seconds(c.starts_at), ends_at: seconds(c.ends_at) };
}

/** When a suspension ends (Unix seconds), from a bridge reply or a problem body. */
export function untilOf(error) {
  const u = error?.until ?? error?.body?.until ?? null;
  if (u === null || u === undefined) return null;
  return typeof u === "string" ? Date.parse(u) / 1000 : u;
}

export function errorText(error) {
  const code = error?.code || "generic";
  if (code === "suspended") {
    const until = untilOf(error);
    return until ? t("error.suspended", { until: dateTime(until) }) : t("error.suspended_plain");
  }
  const seat = error?.seat ?? error?.body?.seat;
  if (code === "conflict" && seat) return t("error.party_conflict", { seat });
  if (code === "conflict") {
    const c = conflictOf(error);
    if (!c || c.starts_at == null || c.ends_at == null) return t("error.conflict_plain");
    const status = has(`res.${c.status}`) ? t(`res.${c.status}`) : c.status || "";
    return t("error.conflict", { range: range(c.starts_at, c.ends_at), status });
  }
  const key = `error.${code}`;
  return has(key) ? t(key) : t("error.generic", { code });
}
