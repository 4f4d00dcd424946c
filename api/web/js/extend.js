// The session-ending offer (issue 18): a `session_ending` notification comes
// PLAZA_SESSION_END_WARNING before a checked-in slot ends; when the machine is free after it,
// its `extend` ({reservation_id, until}) says how far the booking may run, and the toast (and
// the list) carry a button that extends it there with the `extend` op. A button once used is
// not offered again on this page.

import { clock, t } from "./i18n.js";

export class ExtendOffers {
  constructor({ onExtend = async () => false } = {}) {
    this.onExtend = onExtend; // (offer, reservation) -> true when the booking was extended
    this.done = new Set(); // reservation ids extended from an offer
  }

  /** The button of a session_ending notification's offer (null: none, or used). */
  button(n) {
    const offer = n.extend;
    if (n.type !== "session_ending" || !offer || this.done.has(offer.reservation_id)) return null;
    if (offer.until <= Date.now() / 1000) return null;
    const button = document.createElement("button");
    button.type = "button";
    button.className = "extend-offer";
    button.dataset.extendOffer = n.id;
    button.textContent = t("notif.extend", { time: clock(offer.until) });
    return button;
  }

  /** Clicks on a container of toasts or list items; ``find(id)`` gives the notification. */
  bind(container, find, after) {
    container.addEventListener("click", async (e) => {
      const button = e.target.closest("button[data-extend-offer]");
      if (!button) return;
      const n = find(button.dataset.extendOffer);
      if (!n?.extend) return;
      button.disabled = true;
      if (await this.onExtend(n.extend, n.reservation)) {
        this.done.add(n.extend.reservation_id);
        after();
      } else {
        button.disabled = false;
      }
    });
  }
}
