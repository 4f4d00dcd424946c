"""Reservation commands: intake -> per-machine actors -> batch runner -> committer -> outbox.

Theory of operation
-------------------
- :mod:`~bridge.reservations.intake` turns a request message into a job, or answers it at
  once (malformed, over budget, not allowed); it only enqueues.
- :mod:`~bridge.reservations.actors`: every job goes to the actor of its machine, one asyncio
  queue and one worker per machine, created on demand and reaped after
  ``actor_idle_seconds`` without work. An actor hands its jobs on one at a time and in arrival
  order, so commands for one machine are applied one after another.
- :mod:`~bridge.reservations.batch_runner` takes whatever the actors have handed it (up to
  ``commit_batch_max``), and :mod:`~bridge.reservations.committer` decides them in one
  transaction (group commit), in arrival order. Machines therefore proceed in parallel. Every
  decision is made by :func:`plaza.rules.decide` on facts read inside the transaction
  (:mod:`~bridge.reservations.slotbook`); SQL backs it (PostgreSQL exclusion constraints;
  SQLite BEGIN IMMEDIATE).
- :mod:`~bridge.reservations.effects` renders each decision into rows: the reservation, the
  reply and the command log, events, notifications and machine commands, all written to the
  outbox in the same transaction, then published in commit order by
  :class:`bridge.outbox.OutboxPublisher`.
- :mod:`~bridge.reservations.timers` turns what SQL says is due into jobs like any other.
- Idempotency: each request's key (``user:request_id``) is stored with its reply in the command
  log, in the same transaction. A repeated key is answered with the stored reply, unchanged.
  aiomqtt acknowledges a QoS 1 message when it is queued, not when it is handled, so a
  bridge killed in between has acknowledged a command it never applied: the requester's
  retry with the same request id (on timeout) recovers it. See docs/protocol.md.
"""
