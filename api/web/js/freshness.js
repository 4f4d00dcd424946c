// Which of two views of a list is newer. A list kept live (MQTT replies, events) is also
// reloaded over REST now and then; a REST answer can be older than a change that arrived
// while it was on its way. Every local change of an item is stamped; a reload notes the stamp
// when it asks, and an answer leaves alone every item changed after that. Answers to reloads
// that were overtaken by a later one are dropped whole.

export class LocalChanges {
  constructor() {
    this.stamp = 0; // grows with every local change
    this.changedAt = new Map(); // item id -> stamp of its last local change
    this.asked = 0; // reloads asked
    this.applied = 0; // the latest reload whose answer was applied
    this.inFlight = 0;
  }

  /** A local change of `id` (from a reply, an event, an action of this page). */
  touch(id) {
    this.stamp += 1;
    this.changedAt.set(id, this.stamp);
  }

  /** A reload starts: keep the ticket for `newer` and `finish`. */
  begin() {
    this.asked += 1;
    this.inFlight += 1;
    return { n: this.asked, stamp: this.stamp };
  }

  /** False when a later reload was applied already: drop this answer. */
  current(ticket) {
    return ticket.n > this.applied;
  }

  /** Whether `id` changed here after the reload of `ticket` was asked. */
  newer(id, ticket) {
    return (this.changedAt.get(id) ?? 0) > ticket.stamp;
  }

  /** The reload's answer was applied (or failed). */
  finish(ticket, applied) {
    this.inFlight = Math.max(0, this.inFlight - 1);
    if (applied) this.applied = Math.max(this.applied, ticket.n);
    // With no reload on its way, older stamps can no longer matter.
    if (!this.inFlight) this.changedAt.clear();
  }
}
