// Booking for a group (players): N machines of one kind for one slot, all or nothing, over
// the venue's request topic (plaza/venue/requests/{me}) while live, else POST
// /reservations/party. The bridge picks them in one zone, next to each other where it can;
// the dialog then lists every seat with its own check-in code (each friend types their own
// on their machine). A refusal books nothing and says which seat failed.

import { durationOptions, requestId, slotOf, startOptions } from "./booking.js";
import { errorText } from "./errors.js";
import { range, t } from "./i18n.js";
import { kindName } from "./waitlist.js";

const SEATS = [2, 3, 4, 5, 6, 7, 8];

export class PartyBooking {
  constructor(dialog, { board, command, mine, nameOf, notify }) {
    this.dialog = dialog;
    this.board = board;
    this.command = command;
    this.mine = mine;
    this.nameOf = nameOf;
    this.notify = notify;
    this.form = dialog.querySelector("form");
    this.kind = dialog.querySelector("#party-kind");
    this.seats = dialog.querySelector("#party-seats");
    this.start = dialog.querySelector("#party-start");
    this.length = dialog.querySelector("#party-duration");
    this.error = dialog.querySelector("#party-error");
    this.codes = dialog.querySelector("#party-codes");
    this.submitButton = dialog.querySelector("#party-submit");
    this.request = null; // the request id of the booking on its way (a retry reuses it)
    this.form.addEventListener("submit", (e) => {
      e.preventDefault();
      this.submit();
    });
    dialog.querySelector("#party-close").addEventListener("click", () => dialog.close());
  }

  open() {
    const kinds = [...new Set(this.board.list().map((e) => e.kind))];
    this.kind.replaceChildren(...kinds.map((k) => new Option(kindName(k), k)));
    this.seats.replaceChildren(...SEATS.map((n) => new Option(String(n), String(n), false, n === 3)));
    this.start.replaceChildren(...startOptions());
    this.length.replaceChildren(...durationOptions());
    this.error.hidden = true;
    this.codes.replaceChildren();
    this.codes.hidden = true;
    this.submitButton.disabled = false;
    this.request = null;
    if (!this.dialog.open) this.dialog.showModal();
    this.kind.focus();
  }

  async submit() {
    const slot = slotOf(this.start, this.length);
    const body = {
      op: "reserve_party",
      kind: this.kind.value,
      seats: Number(this.seats.value),
      ...slot,
    };
    this.error.hidden = true;
    this.submitButton.disabled = true;
    this.request ??= requestId("party");
    const reply = await this.command(null, { request_id: this.request, ...body });
    this.submitButton.disabled = false;
    if (!reply.ok) {
      this.error.dataset.code = reply.error?.code || "generic";
      this.error.textContent = errorText(reply.error);
      this.error.hidden = false;
      if (reply.error?.code !== "timeout") this.request = null;
      return;
    }
    this.request = null;
    const seats = reply.reservations || [reply.reservation];
    for (const r of seats) this.mine.upsert(r);
    this.showCodes(seats, slot);
    this.notify(t("party.booked", { seats: seats.length, range: range(slot.starts_at, slot.ends_at) }));
  }

  showCodes(seats) {
    const items = seats.map((r) => {
      const li = document.createElement("li");
      li.dataset.device = r.device_id;
      li.dataset.code = r.code;
      li.textContent = t("party.seat", { name: this.nameOf(r.device_id), code: r.code });
      return li;
    });
    this.codes.replaceChildren(...items);
    this.codes.hidden = false;
    this.submitButton.disabled = true; // booked: close, or open again for another party
  }
}
