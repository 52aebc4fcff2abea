"""Every Redis key relay uses. All start with ``relay:``.

::

    relay:inbox                 list: ids of accepted events not yet taken by a worker
    relay:dedupe:<sha256>       event id of the first copy of a notification
    relay:event:<id>            the event (JSON)
    relay:history:<id>          its life: a list of JSON history entries, oldest first
    relay:ref:<value>           sorted set of event ids sharing a transid or tid
    relay:routed:<id>           set once the event was routed (a second routing is dropped)
    relay:dlv:<delivery id>:n      attempts started (counted before each try: a try that
                                   kills its worker still counts)
    relay:dlv:<delivery id>:gen    generation of the delivery's live task message; a message
                                   of an older generation is a stale copy and is dropped
    relay:dlv:<delivery id>:lock   held while an attempt runs
    relay:dlv:<delivery id>:done   set once the destination accepted it
    relay:dlv:<delivery id>:log    every finished attempt (JSON list)
    relay:dead:<delivery id>    a dead letter (JSON)
    relay:dead                  sorted set of dead-letter ids by the time they were stored
                                (epoch seconds)
    relay:dead-of:<destination>  the same, for the dead letters of one destination (a
                                routing's are in none); expires with its newest entry
    relay:dead-destinations     hash: dead-letter id → its destination (the set it leaves
                                with it); expires with its newest entry
    relay:dead-indexed          set once the dead letters stored before the per-destination
                                sets existed were added to them (relay.state.dead_letters)
    relay:alerts:due            sorted set: notification groups → when their next message
                                is due (claimed, and removed, by the flusher that sends it)
    relay:alert:<group>         hash: one notification group: notification, labels (JSON),
                                first, sent (time of its last message), ttl, and
                                count:<kind> (alerts since its last message)
    relay:alert:<group>:examples  list: its latest alerts since its last message (JSON),
                                newest first
    relay:pending               sorted set: every unit of work not yet settled
                                ("route:<event id>", "deliver:<delivery id>"), scored by
                                when it counts as lost if nobody owns it
    relay:pending:tasks         hash: the same members → the task that does it (JSON)
    relay:pending:destinations  hash: the "deliver:" members of those → their destination
                                (written and removed with the member: relay.state.pending)
    relay:backlog               hash: destination → how many of its deliveries are pending
                                (the members above naming it; changed in the same Lua call)
    relay:backlog:counted       set once the deliveries pending before relay:backlog
                                existed were counted into it (relay.state.backlog)
    relay:nodes                 sorted set: worker node ids → time of their last heartbeat
    relay:owned:<node>          set: the pending members a worker node has taken
    relay:msgs:<day>            hash: transid → its message's lifecycle (relay.state.lifecycle:
                                state, first receipt's times, last receipt's fields, packed),
                                for the messages first received that day (days since the epoch)
    relay:lifecycle:due         sorted set: the seconds that have deadlines (member = score)
    relay:lifecycle:due:<second>  list: transids whose final receipt is overdue from then
    relay:lifecycle:stats:<hour>  hash: final receipts of that hour by time to final
                                (le<seconds> → count) and how many came late
    relay:lifecycle:claimed:<node>  set: overdue transids a worker node claimed and has not
                                fired yet
    relay:optout:<digits>       an opted-out sender
    relay:cooldown:<dest>:<digits>  a reply window, holding the delivery id that claimed it
    relay:logins:<address>      failed logins (console or admin API) from one client
                                address, expiring a minute after the first; at the limit,
                                its cooling-off (relay.state.logins)
    relay:lock:<name>           short locks (one sweeper at a time)
    relay:fence                 written just before a WAIT that confirms an operator's
                                writes reached the replicas (RELAY_REDIS_MIN_REPLICAS)
    relay:republished:<member>  how often a unit of work was published again (poison count)
    relay:idx:all               sorted set: every routed event id, scored by its accept time
                                (ms); trimmed and expiring with the history (RELAY_HISTORY_TTL)
    relay:idx:<facet>:<value>   the same, for the events with that facet value (kind, status,
                                code, source, route, destination, keyword, state: see
                                relay.state.index)
    relay:idx:retrying          the same, for the events with a retry scheduled
    relay:track:<event id>      hash: the event's accept time (@at), search state (@state)
                                and each delivery's settlement (delivery id → open, retry,
                                done, dead)
    relay:rules:in-force        the rules the last web or worker process loaded: version, when,
                                and what each destination's status shows of it (JSON;
                                relay.state.in_force)
    relay:dests                 set: names of destinations ever paused or whose circuit moved
                                (what the metrics report on)
    relay:dest:<name>:paused    a destination's pause (JSON since/until; expires with ``--for``)
    relay:dest:<name>:parked    set: deliveries waiting for the pause or the open circuit to
                                end (published again on resume or when the circuit closes;
                                one leaves it when the gate lets it go)
    relay:dest:<name>:circuit   hash: its circuit breaker (state, failures, until, probe,
                                probe_until, changed)
    relay:dest:<name>:inflight  sorted set: concurrency leases, delivery → lease expiry
    relay:dest:<name>:bucket    hash: its rate limit's token bucket (tat: next token; hint:
                                the next slot handed to a refused caller)
    relay:dest:<name>:stats:<minute>  hash: attempts ok/failed and latency buckets of one
                                minute (kept 10 minutes)
    relay:dest:<name>:error     its last error (JSON at/error)
    relay:seq                   counter: the accept sequence of events with a key some
                                destination is ordered by (relay.state.ordering)
    relay:arrivals:<field>:<h>  sorted set: the accepted events whose <field> has the value
                                hashed <h> (16 hex of its sha256) and not routed yet, by their
                                sequence; expires a history TTL after the last accept
    relay:ordq:<dest>:<h>       sorted set: the deliveries of one key of an ordered destination
                                not settled yet, by their event's sequence: the first is the
                                one whose turn it is (a dead one stays first while it blocks)
    relay:ordw:<dest>:<h>       set: those of them parked (no task message): woken in turn
    relay:ordb:<dest>           hash: <h> → the key's blocking dead letter (JSON id, by, value,
                                since), for on_failure: block
    relay:ordb                  set: destinations that have had blocked keys
    relay:ordafter:<event id>   set: the keys (JSON [dest, field, h]) whose next delivery waits
                                for that event, accepted before it, to be routed
"""

from __future__ import annotations

PREFIX = "relay:"

INBOX = PREFIX + "inbox"
PENDING = PREFIX + "pending"
PENDING_TASKS = PREFIX + "pending:tasks"
PENDING_DESTINATIONS = PREFIX + "pending:destinations"
BACKLOG = PREFIX + "backlog"
BACKLOG_COUNTED = PREFIX + "backlog:counted"
RULES_IN_FORCE = PREFIX + "rules:in-force"
NODES = PREFIX + "nodes"
DEAD = PREFIX + "dead"
DEAD_DESTINATIONS = PREFIX + "dead-destinations"
DEAD_INDEXED = PREFIX + "dead-indexed"
INDEX_ALL = PREFIX + "idx:all"
RETRYING = PREFIX + "idx:retrying"
CONTROLLED = PREFIX + "dests"
FENCE = PREFIX + "fence"
SEQ = PREFIX + "seq"
ORDER_BLOCKED = PREFIX + "ordb"


def dedupe(fp: str) -> str:
    return PREFIX + "dedupe:" + fp


def event(event_id: str) -> str:
    return PREFIX + "event:" + event_id


def history(event_id: str) -> str:
    return PREFIX + "history:" + event_id


def ref(value: str) -> str:
    return PREFIX + "ref:" + value


def delivery(delivery_id: str, part: str) -> str:
    """``part``: ``n``, ``gen``, ``lock``, ``done`` or ``log``."""
    return f"{PREFIX}dlv:{delivery_id}:{part}"


def destination(name: str, part: str) -> str:
    """``part``: ``paused``, ``parked``, ``circuit``, ``inflight``, ``bucket``, ``error`` or
    ``stats:<minute>``."""
    return f"{PREFIX}dest:{name}:{part}"


def dead(delivery_id: str) -> str:
    return PREFIX + "dead:" + delivery_id


def dead_of(destination: str) -> str:
    """The dead letters of ``destination``, by the time they were stored."""
    return PREFIX + "dead-of:" + destination


def index(facet: str, value: str) -> str:
    """The search index of events whose ``facet`` is ``value`` (normalised by
    ``relay.state.index.normalize``)."""
    return f"{PREFIX}idx:{facet}:{value}"


def track(event_id: str) -> str:
    return PREFIX + "track:" + event_id


def arrivals(by: str, key: str) -> str:
    """The events accepted with the value hashed ``key`` of the field ``by``, not routed."""
    return f"{PREFIX}arrivals:{by}:{key}"


def order(part: str, destination: str, key: str = "") -> str:
    """``part``: ``ordq`` (a key's deliveries in turn), ``ordw`` (those parked) or ``ordb``
    (a destination's blocked keys: no ``key``)."""
    return f"{PREFIX}{part}:{destination}:{key}" if key else f"{PREFIX}{part}:{destination}"


ALERTS_DUE = PREFIX + "alerts:due"
ALERT_PREFIX = PREFIX + "alert:"


def alert_group(group: str) -> str:
    """A notification group's hash; its examples are this key + ``:examples``."""
    return ALERT_PREFIX + group


def alert_examples(group: str) -> str:
    return ALERT_PREFIX + group + ":examples"


def alerts_claimed(node: str) -> str:
    """The notification messages worker ``node`` claimed and has not sent yet."""
    return PREFIX + "alerts:claimed:" + node


LIFECYCLE_DUE = PREFIX + "lifecycle:due"


def messages(day: int) -> str:
    """The lifecycle records of the messages first received on ``day`` (since the epoch)."""
    return f"{PREFIX}msgs:{day}"


def lifecycle_due(second: str | int) -> str:
    """The transids whose deadline is ``second`` (epoch seconds)."""
    return f"{PREFIX}lifecycle:due:{second}"


def lifecycle_stats(hour: int) -> str:
    """The counts of the final receipts of ``hour`` (hours since the epoch)."""
    return f"{PREFIX}lifecycle:stats:{hour}"


def lifecycle_claimed(node: str) -> str:
    """The overdue messages worker ``node`` claimed and has not fired yet."""
    return PREFIX + "lifecycle:claimed:" + node


def owned(node: str) -> str:
    return PREFIX + "owned:" + node


def optout(digits: str) -> str:
    return PREFIX + "optout:" + digits


def cooldown(destination: str, digits: str) -> str:
    return f"{PREFIX}cooldown:{destination}:{digits}"


def logins(address: str) -> str:
    """Failed logins from the client ``address``."""
    return PREFIX + "logins:" + address


def lock(name: str) -> str:
    return PREFIX + "lock:" + name


def republished(member: str) -> str:
    return PREFIX + "republished:" + member


def route_member(event_id: str) -> str:
    """The pending-outbox member of an event's routing."""
    return "route:" + event_id


def deliver_member(delivery_id: str) -> str:
    """The pending-outbox member of a delivery."""
    return "deliver:" + delivery_id


def delivery_of(member: str) -> str:
    """The delivery id of a delivery's pending-outbox member (:func:`deliver_member`)."""
    return member.removeprefix("deliver:")


def storable(key: str) -> bool:
    """False for text no Redis key can hold (lone surrogates): such an id is simply unknown."""
    try:
        key.encode("utf-8")
    except UnicodeEncodeError:
        return False
    return True
