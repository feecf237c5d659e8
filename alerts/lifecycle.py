"""The alert lifecycle: who may move an alert from which state to which, and what each move emits.

States (issue 6)::

    new -> acknowledged -> dispatched -> resolved
     |  \\___________\\____________\\____> rejected   (false positive; a reason is required and kept
     |                                               as feedback for tuning the rules)
     +--> deferred (due date) --due--> new          (the system watches the due date)

Any open state (``new``, ``acknowledged``, ``dispatched``, ``deferred``) may go straight to
``resolved``, ``rejected`` or ``deferred``; ``new`` may skip ``acknowledged`` (an operator who
dispatches at once). ``resolved`` and ``rejected`` are final except for an explicit reopen to
``new``. Every change is stored as an event with who, when and a note (``AlertStore.transition``)
and published to the alert's routes with the event type of :data:`EVENT_TYPES`.

The states follow the usual incident workflow of video-management systems (Milestone XProtect
alarm states "New / In progress / On hold / Closed", Genetec's acknowledge/investigate/close).
"""

from __future__ import annotations

import datetime as dt
from dataclasses import dataclass

from ingest.errors import BaqylauError

#: Every lifecycle state, in workflow order.
STATES: tuple[str, ...] = ("new", "acknowledged", "dispatched", "resolved", "rejected", "deferred")

#: States an operator still has to act on.
OPEN_STATES: frozenset[str] = frozenset({"new", "acknowledged", "dispatched", "deferred"})

#: Allowed moves: from-state -> to-states.
TRANSITIONS: dict[str, frozenset[str]] = {
    "new": frozenset({"acknowledged", "dispatched", "resolved", "rejected", "deferred"}),
    "acknowledged": frozenset({"dispatched", "resolved", "rejected", "deferred"}),
    "dispatched": frozenset({"resolved", "rejected", "deferred"}),
    "deferred": frozenset({"new", "acknowledged", "dispatched", "resolved", "rejected", "deferred"}),
    "resolved": frozenset({"new"}),
    "rejected": frozenset({"new"}),
}

#: Event type published when an alert enters a state (Standard Webhooks style ``noun.verb``).
EVENT_TYPES: dict[str, str] = {
    "acknowledged": "alert.acknowledged", "dispatched": "alert.dispatched",
    "resolved": "alert.resolved", "rejected": "alert.rejected", "deferred": "alert.deferred",
    "new": "alert.reopened",
}

#: Reasons offered for a rejection (free text is accepted too); kept for tuning the rules.
REJECT_REASONS: tuple[str, ...] = ("false_positive", "duplicate", "not_actionable", "test", "other")

#: Longest deferral: an alert put off further than this should be resolved or rejected instead.
MAX_DEFER = dt.timedelta(days=366)

#: Actor recorded for changes the system makes itself (a deferral falling due).
SYSTEM_ACTOR = "system"


class LifecycleError(BaqylauError, ValueError):
    """A status change is not allowed (unknown state, forbidden move, missing reason or due date)."""


@dataclass(frozen=True, slots=True)
class StatusChange:
    """One lifecycle change, as stored in the alert's history.

    Attributes:
        alert_id: The alert.
        from_status: State before.
        to_status: State after.
        actor: Who made the change (operator login, ``"system"``).
        at_utc: When, aware UTC.
        note: Free text, or ``None``.
        reason: Why it was rejected (required then), or ``None``.
        due_utc: When a deferred alert falls due (required for ``deferred``), aware UTC, or ``None``.
    """

    alert_id: str
    from_status: str
    to_status: str
    actor: str
    at_utc: dt.datetime
    note: str | None = None
    reason: str | None = None
    due_utc: dt.datetime | None = None


def check_transition(from_status: str, to_status: str, *, actor: str, reason: str | None = None,
                     due_utc: dt.datetime | None = None, now: dt.datetime | None = None) -> None:
    """Check that a change is allowed.

    Args:
        from_status: Current state.
        to_status: Requested state.
        actor: Who asks; must be non-empty.
        reason: Required (non-empty) for ``rejected``.
        due_utc: Required for ``deferred``; aware, later than ``now`` and at most
            :data:`MAX_DEFER` after it.
        now: Current aware time (``datetime.now(UTC)`` when ``None``).

    Raises:
        LifecycleError: For an unknown state, a move not in :data:`TRANSITIONS`, an empty
            actor, a rejection without reason or a deferral without a future due date.
    """
    for name, value in (("from", from_status), ("to", to_status)):
        if value not in TRANSITIONS:
            raise LifecycleError(f"unknown alert status {value!r} ({name}); known: {', '.join(STATES)}")
    if to_status not in TRANSITIONS[from_status]:
        allowed = ", ".join(sorted(TRANSITIONS[from_status])) or "none"
        raise LifecycleError(f"an alert that is {from_status!r} cannot become {to_status!r} (allowed: {allowed})")
    if not isinstance(actor, str) or not actor.strip():
        raise LifecycleError("every status change needs who made it (actor)")
    if to_status == "rejected" and not (reason and reason.strip()):
        raise LifecycleError(f"rejecting an alert needs a reason (e.g. {', '.join(REJECT_REASONS)})")
    if to_status == "deferred":
        if due_utc is None:
            raise LifecycleError("deferring an alert needs a due date")
        if due_utc.tzinfo is None:
            raise LifecycleError(f"due date {due_utc!r} is naive; give a UTC offset")
        now = now or dt.datetime.now(dt.UTC)
        if due_utc <= now:
            raise LifecycleError(f"due date {due_utc.isoformat()} is not in the future")
        if due_utc - now > MAX_DEFER:
            raise LifecycleError(f"due date {due_utc.isoformat()} is more than {MAX_DEFER.days} days away; "
                                 "resolve or reject the alert instead")
