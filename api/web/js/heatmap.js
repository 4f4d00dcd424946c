// Occupancy at a glance (staff): GET /admin/utilization for the last 7, 14 or 31 days (one
// zone or all), drawn as an hour x weekday heatmap in plain SVG. Each cell prints its
// occupancy in percent and is shaded by it, so the figure never rests on colour alone; its
// <title> and the table's summary say the same in words. Beside it: the no-show rate, the
// average session and the count of sessions under 10 minutes. "CSV" downloads
// GET /admin/utilization?format=csv for the same window (per zone and hour).

import { number, t, tOr } from "./i18n.js";

const SVG = "http://www.w3.org/2000/svg";
const CELL = 28;
const LEFT = 44;
const TOP = 22;
const DAY = 24 * 3600 * 1000;

function node(name, attrs = {}, text = "") {
  const el = document.createElementNS(SVG, name);
  for (const [k, v] of Object.entries(attrs)) el.setAttribute(k, String(v));
  if (text) el.textContent = text;
  return el;
}

export class Occupancy {
  constructor(root, { rest, fail }) {
    this.root = root;
    this.rest = rest;
    this.fail = fail;
    this.data = null;
    this.form = root.querySelector("#occupancy-form");
    this.zone = root.querySelector("#occupancy-zone");
    this.days = root.querySelector("#occupancy-days");
    this.chart = root.querySelector("#heatmap");
    this.summary = root.querySelector("#occupancy-summary");
    this.form.addEventListener("submit", (e) => {
      e.preventDefault();
      this.load();
    });
    root.querySelector("#occupancy-csv").addEventListener("click", () => this.csv());
  }

  /** The zones to choose from (the floor's, else the machines'). */
  setZones(zones) {
    const chosen = this.zone.value;
    const all = document.createElement("option");
    all.value = "";
    all.textContent = t("occupancy.all_zones");
    this.zone.replaceChildren(
      all,
      ...zones.map(([id, name]) => {
        const o = document.createElement("option");
        o.value = id;
        o.textContent = tOr(`zone.${id}`, name);
        return o;
      }),
    );
    this.zone.value = zones.some(([id]) => id === chosen) ? chosen : "";
  }

  query(format) {
    const end = new Date(Math.ceil(Date.now() / 3600000) * 3600000);
    const start = new Date(end.getTime() - Number(this.days.value) * DAY);
    const q = new URLSearchParams({ from: start.toISOString(), to: end.toISOString() });
    if (this.zone.value) q.set("zone", this.zone.value);
    if (format) q.set("format", format);
    return `/admin/utilization?${q}`;
  }

  async load() {
    try {
      this.data = await this.rest.get(this.query());
    } catch (err) {
      this.fail(err);
      return;
    }
    this.render();
  }

  render() {
    const d = this.data;
    if (!d) return;
    const pct = (v) => (v === null ? "–" : `${number(v * 100)}%`);
    const items = [
      ["occupancy.no_show_rate", pct(d.no_show_rate)],
      ["occupancy.no_shows", `${d.no_shows} / ${d.reservations_decided}`],
      ["occupancy.sessions", String(d.sessions)],
      [
        "occupancy.average",
        d.average_session_minutes === null
          ? "–"
          : t("occupancy.minutes", { n: number(d.average_session_minutes) }),
      ],
      ["occupancy.short", String(d.short_sessions)],
    ];
    this.summary.replaceChildren(
      ...items.map(([key, value]) => {
        const div = document.createElement("div");
        div.dataset.figure = key.split(".")[1];
        const dt = document.createElement("dt");
        dt.textContent = t(key);
        const dd = document.createElement("dd");
        dd.textContent = value;
        div.append(dt, dd);
        return div;
      }),
    );
    this.drawHeatmap(d.heatmap);
  }

  drawHeatmap(cells) {
    const by = new Map(cells.map((c) => [`${c.weekday}:${c.hour}`, c.occupancy]));
    const svg = node("svg", {
      class: "heatmap-svg",
      viewBox: `0 0 ${LEFT + 24 * CELL} ${TOP + 7 * CELL}`,
      role: "img",
      "aria-label": t("occupancy.heatmap_label"),
    });
    for (let h = 0; h < 24; h += 3) {
      svg.append(node("text", { x: LEFT + h * CELL + CELL / 2, y: TOP - 7, class: "hm-hour" }, String(h)));
    }
    for (let w = 0; w < 7; w++) {
      const dayName = t(`occupancy.day.${w}`);
      svg.append(node("text", { x: LEFT - 6, y: TOP + w * CELL + CELL / 2 + 4, class: "hm-day" }, dayName));
      for (let h = 0; h < 24; h++) {
        const value = by.get(`${w}:${h}`);
        const g = node("g", { class: "hm-cell", "data-weekday": w, "data-hour": h });
        const x = LEFT + h * CELL;
        const y = TOP + w * CELL;
        const share = value ?? 0;
        g.append(
          node("rect", {
            x: x + 1,
            y: y + 1,
            width: CELL - 2,
            height: CELL - 2,
            "fill-opacity": value === undefined ? 0 : 0.08 + 0.92 * share,
          }),
        );
        const label = value === undefined ? "" : String(Math.round(share * 100));
        g.dataset.occupancy = label;
        if (label) {
          const dark = share > 0.55 ? " hm-on-dark" : "";
          g.append(node("text", { x: x + CELL / 2, y: y + CELL / 2 + 4, class: `hm-value${dark}` }, label));
        }
        g.append(
          node("title", {}, t("occupancy.cell", { day: dayName, hour: h, value: label ? `${label}%` : "–" })),
        );
        svg.append(g);
      }
    }
    this.chart.replaceChildren(svg);
  }

  async csv() {
    try {
      const reply = await fetch(this.query("csv"), {
        headers: { Authorization: `Bearer ${this.rest.auth?.access_token}` },
      });
      if (!reply.ok) throw new Error(`HTTP ${reply.status}`);
      const blob = await reply.blob();
      const link = document.createElement("a");
      link.href = URL.createObjectURL(blob);
      link.download = `utilization-${this.days.value}d${this.zone.value ? "-" + this.zone.value : ""}.csv`;
      link.click();
      setTimeout(() => URL.revokeObjectURL(link.href), 10000);
    } catch (err) {
      this.fail(err);
    }
  }
}
