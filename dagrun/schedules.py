"""When a deployment runs: cron, interval and rrule schedules, computed as UTC instants.

This is the pure layer under `dagrun serve`: no clock, no database. Every slot is an aware UTC
datetime and every datetime passed in must be aware (a naive one is a `ConfigError`).

Wall-clock schedules (cron, rrule) follow Vixie cron across daylight-saving changes:

    local time ...          fixed-time job (e.g. `30 1 * * *`)   wildcard job (`0 * * * *`)
    repeated (fall-back)    once, at the first occurrence        at each real occurrence
    skipped (spring-fwd)    once, when the clocks jump (03:00)   not at all (every real hour)

A cron job is "wildcard" when its minute or hour field starts with `*`, as in Vixie cron. rrule
times are treated as fixed (unlike RFC 5545, which drops a skipped local time: a daily job should
not silently miss a day). croniter is used only on naive wall-clock times, because on fall-back
it fires fixed-time jobs twice; the fold handling here is ours. Interval schedules are pure
elapsed time, so DST does not touch them.
"""

from __future__ import annotations

import heapq
import re
from abc import ABC, abstractmethod
from collections.abc import Iterable, Iterator
from dataclasses import dataclass, field
from datetime import datetime, timedelta, timezone, tzinfo
from itertools import islice
from math import isfinite
from typing import Any
from zoneinfo import ZoneInfo

from croniter import croniter
from dateutil.rrule import DAILY, HOURLY, MINUTELY, SECONDLY, WEEKLY, rrule, rrulestr

from dagrun.errors import ConfigError

__all__ = ["CronSchedule", "IntervalSchedule", "RRuleSchedule", "Schedule", "make_schedule",
           "missed_slots"]

UTC = timezone.utc
DEFAULT_ANCHOR = datetime(2020, 1, 1, tzinfo=UTC)
DEFAULT_DTSTART = datetime(2020, 1, 1)  # wall-clock, in the schedule's timezone
_CRON_ALIASES = {"@yearly": "0 0 1 1 *", "@annually": "0 0 1 1 *", "@monthly": "0 0 1 * *",
                 "@weekly": "0 0 * * 0", "@daily": "0 0 * * *", "@midnight": "0 0 * * *",
                 "@hourly": "0 * * * *"}
_RRULE_PERIODS = {WEEKLY: timedelta(weeks=1), DAILY: timedelta(days=1), HOURLY: timedelta(hours=1),
                  MINUTELY: timedelta(minutes=1), SECONDLY: timedelta(seconds=1)}


class _InvalidSchedule(ConfigError):
    """A constructor's complaint; `make_schedule` re-raises it naming the deployment."""

    def __init__(self, detail: str) -> None:
        super().__init__(f"schedule: {detail}")
        self.detail = detail


class Schedule(ABC):
    """The times a deployment is due, as aware UTC instants ("slots")."""

    __slots__ = ()

    @abstractmethod
    def _slots_after(self, after: datetime) -> Iterator[datetime]:
        """Slots strictly after `after` (aware UTC), ascending, lazily and without end."""

    @abstractmethod
    def describe(self) -> str:
        """One line for `dagrun deployments ls`."""

    def slots_between(self, start: datetime, end: datetime) -> Iterator[datetime]:
        """Slots t with start < t <= end, ascending."""
        start, end = _utc(start, "start"), _utc(end, "end")
        for slot in self._slots_after(start):
            if slot > end:
                return
            yield slot

    def next_slots(self, after: datetime, count: int) -> list[datetime]:
        """The next `count` slots strictly after `after` (fewer if an rrule ends)."""
        return list(islice(self._slots_after(_utc(after, "after")), count))


@dataclass(frozen=True, slots=True)
class CronSchedule(Schedule):
    """A 5-field cron expression (or @daily, @hourly, ...) on the wall clock of `timezone`.

        CronSchedule("0 2 * * *", "Europe/Berlin")   02:00 Berlin time, once a day
        CronSchedule("*/15 * * * *")                 every quarter hour, UTC
    """

    cron: str
    timezone: str = "UTC"
    _expression: str = field(init=False, repr=False, compare=False)
    _wildcard: bool = field(init=False, repr=False, compare=False)

    def __post_init__(self) -> None:
        _zone(self.timezone)
        if not isinstance(self.cron, str):
            raise _InvalidSchedule(f"cron {self.cron!r} is invalid: expected a string")
        expression = _CRON_ALIASES.get(self.cron.strip().lower(), self.cron.strip())
        fields = expression.split()
        if len(fields) != 5:
            raise _InvalidSchedule(
                f"cron {self.cron!r} is invalid: expected 5 fields "
                f"(minute hour day-of-month month day-of-week), got {len(fields)}"
            )
        try:  # also rejects expressions that can never fire, such as "0 0 30 2 *"
            croniter(expression, DEFAULT_ANCHOR.replace(tzinfo=None)).get_next(datetime)
        except (ValueError, KeyError, TypeError) as error:
            raise _InvalidSchedule(f"cron {self.cron!r} is invalid: {_one_line(error)}") from None
        object.__setattr__(self, "_expression", expression)
        object.__setattr__(self, "_wildcard", fields[0][0] == "*" or fields[1][0] == "*")

    def _slots_after(self, after: datetime) -> Iterator[datetime]:
        zone = _zone(self.timezone)
        walls = croniter(self._expression, _wall_start(after, zone)).all_next(datetime)
        return _to_utc(walls, zone, repeat=self._wildcard, after=after)

    def describe(self) -> str:
        return f"cron {self.cron!r} ({self.timezone})"


@dataclass(frozen=True, slots=True)
class IntervalSchedule(Schedule):
    """Every `interval` of elapsed time (seconds or a timedelta), from `anchor` on.

    The anchor is the first slot; slots are anchor + k * interval for k >= 0, whatever the
    clocks do. `timezone` only changes how `describe` shows the anchor.

        IntervalSchedule(3600)                                      every hour, on the hour
        IntervalSchedule(timedelta(days=1), datetime(2026, 1, 1, 6, tzinfo=UTC))
    """

    interval: timedelta | float
    anchor: datetime | None = None
    timezone: str = "UTC"

    def __post_init__(self) -> None:
        _zone(self.timezone)
        interval = self.interval
        if isinstance(interval, (int, float)) and not isinstance(interval, bool):
            if not isfinite(interval):
                raise _InvalidSchedule(f"interval {interval!r} must be a finite number of seconds")
            interval = timedelta(seconds=interval)
        if not isinstance(interval, timedelta):
            raise _InvalidSchedule(f"interval {interval!r} must be seconds or a timedelta")
        if interval <= timedelta(0):
            raise _InvalidSchedule(f"interval must be > 0 seconds, got {self.interval!r}")
        anchor = DEFAULT_ANCHOR if self.anchor is None else _utc(self.anchor, "anchor")
        object.__setattr__(self, "interval", interval)
        object.__setattr__(self, "anchor", anchor)

    def _slots_after(self, after: datetime) -> Iterator[datetime]:
        interval: timedelta = self.interval  # type: ignore[assignment]  # normalized above
        anchor: datetime = self.anchor  # type: ignore[assignment]
        slot = anchor + max(0, (after - anchor) // interval + 1) * interval
        while True:
            yield slot
            slot += interval

    def describe(self) -> str:
        seconds = self.interval.total_seconds()  # type: ignore[union-attr]
        shown = int(seconds) if seconds.is_integer() else seconds
        anchor = self.anchor.astimezone(_zone(self.timezone))  # type: ignore[union-attr]
        zone = "" if self.timezone == "UTC" else f" ({self.timezone})"
        return f"every {shown} s from {anchor.isoformat()}{zone}"


@dataclass(frozen=True, slots=True)
class RRuleSchedule(Schedule):
    """An RFC 5545 recurrence rule on the wall clock of `timezone`.

    DTSTART is optional (default 2020-01-01T00:00 local) and is a local time: floating, or with
    a TZID equal to `timezone`, or in UTC ('Z') when `timezone` is UTC. EXDATE/RDATE lines work.

        RRuleSchedule("FREQ=WEEKLY;BYDAY=MO,WE;BYHOUR=9;BYMINUTE=0", "Europe/Berlin")
    """

    rrule: str
    timezone: str = "UTC"
    _rule: Any = field(init=False, repr=False, compare=False)
    _rule_tz: tzinfo | None = field(init=False, repr=False, compare=False)

    def __post_init__(self) -> None:
        zone = _zone(self.timezone)
        if not isinstance(self.rrule, str):
            raise _InvalidSchedule(f"rrule {self.rrule!r} is invalid: expected a string")

        def lookup(name: str) -> tzinfo:
            if name != self.timezone:
                raise ValueError(f"DTSTART TZID {name!r} differs from timezone {self.timezone!r}")
            return zone

        try:
            for value in re.findall(r"INTERVAL=([^;\s]*)", self.rrule, re.IGNORECASE):
                if not value.isdigit() or int(value) < 1:  # dateutil loops forever on 0
                    raise ValueError(f"INTERVAL must be a positive integer, got {value!r}")
            rule = rrulestr(self.rrule, dtstart=DEFAULT_DTSTART, tzids=lookup)
            first = next(iter(rule), None)
        except (ValueError, KeyError, TypeError, IndexError) as error:
            raise _InvalidSchedule(f"rrule {self.rrule!r} is invalid: {_one_line(error)}") from None
        if first is None:
            raise _InvalidSchedule(f"rrule {self.rrule!r} is invalid: it never fires")
        if first.tzinfo not in (None, zone) and self.timezone != "UTC":
            raise _InvalidSchedule(
                f"rrule {self.rrule!r} is invalid: a DTSTART in UTC ('Z') needs timezone 'UTC'; "
                f"write DTSTART as a local time in {self.timezone!r}"
            )
        object.__setattr__(self, "_rule", rule)
        object.__setattr__(self, "_rule_tz", first.tzinfo)

    def _slots_after(self, after: datetime) -> Iterator[datetime]:
        zone = _zone(self.timezone)
        base = _wall_start(after, zone).replace(tzinfo=self._rule_tz)
        occurrences = _restarted(self._rule, base).xafter(base, inc=True)
        walls = (occurrence.replace(tzinfo=None) for occurrence in occurrences)
        return _to_utc(walls, zone, repeat=False, after=after)

    def describe(self) -> str:
        return f"rrule {' '.join(self.rrule.split())!r} ({self.timezone})"


def make_schedule(
    *,
    cron: str | None = None,
    interval: timedelta | float | None = None,
    rrule: str | None = None,
    timezone: str = "UTC",
    anchor: datetime | None = None,
    owner: str | None = None,
) -> Schedule:
    """Build the one schedule a deployment declares; errors name the deployment `owner`."""
    prefix = "schedule" if owner is None else f"deployment {owner!r}"
    given = [name for name, value in (("cron", cron), ("interval", interval), ("rrule", rrule))
             if value is not None]
    if len(given) != 1:
        got = " and ".join(given) or "none"
        raise ConfigError(f"{prefix}: give exactly one of cron, interval, rrule (got {got})")
    if anchor is not None and interval is None:
        raise ConfigError(f"{prefix}: anchor applies only to an interval schedule")
    try:
        if cron is not None:
            return CronSchedule(cron, timezone)
        if rrule is not None:
            return RRuleSchedule(rrule, timezone)
        return IntervalSchedule(interval, anchor, timezone)  # type: ignore[arg-type]
    except _InvalidSchedule as error:
        raise ConfigError(f"{prefix}: {error.detail}") from None


def missed_slots(
    schedule: Schedule,
    last_slot: datetime,
    now: datetime,
    *,
    catchup: bool,
    max_catchup: int = 100,
) -> list[datetime]:
    """The slots in (last_slot, now] to run now, ascending.

    `last_slot` is the latest slot already handled or, for a deployment that never ran, the
    time it was registered: a new deployment does not run slots from before it existed. With
    `catchup=False` only the most recent missed slot runs; with `catchup=True` all of them, but
    at most the `max_catchup` most recent. The window grows backwards from `now` by doubling, so
    a long outage costs about as much as the slots returned, not the slots missed.
    """
    last_slot, now = _utc(last_slot, "last_slot"), _utc(now, "now")
    if max_catchup < 1:
        raise ConfigError(f"schedule: max_catchup must be >= 1, got {max_catchup}")
    wanted = max_catchup if catchup else 1
    window = timedelta(hours=1)
    while True:
        start = last_slot if now - last_slot <= window else now - window
        slots = list(schedule.slots_between(start, now))
        if len(slots) >= wanted or start == last_slot:
            return slots[-wanted:]
        window *= 2


def _zone(name: str) -> ZoneInfo:
    """The IANA zone `name`; zoneinfo caches instances, so this is cheap to repeat."""
    try:
        return ZoneInfo(name)
    except (ValueError, TypeError, KeyError, OSError):
        raise _InvalidSchedule(
            f"timezone {name!r} is unknown (expected an IANA name such as 'Europe/Berlin')"
        ) from None


def _utc(value: datetime, name: str) -> datetime:
    if not isinstance(value, datetime):
        raise _InvalidSchedule(f"{name} must be a datetime, got {value!r}")
    if value.tzinfo is None or value.utcoffset() is None:
        raise _InvalidSchedule(f"{name} {value.isoformat()} has no timezone; pass an aware one")
    return value.astimezone(UTC)


def _one_line(error: BaseException) -> str:
    return " ".join(str(error).split()) or type(error).__name__


def _wall_start(after: datetime, zone: ZoneInfo) -> datetime:
    """A naive local time from which walking the wall clock finds every slot after `after`.

    Inside a repeated hour, `after` may be in its second pass while earlier wall times of the
    same hour still have a second-pass slot ahead, so step back over the whole repetition.
    """
    local = after.astimezone(zone)
    first, second = _offsets(local)
    repeated = max(first - second, timedelta(0))
    return local.replace(tzinfo=None) - repeated - timedelta(microseconds=1)


def _to_utc(
    walls: Iterable[datetime], zone: ZoneInfo, *, repeat: bool, after: datetime
) -> Iterator[datetime]:
    """Turn ascending naive wall times into ascending, distinct UTC slots after `after`.

    The first instant of each wall time never decreases, so a small heap only has to hold the
    second passes through a repeated hour until the walk has moved past them.
    """
    pending: list[datetime] = []
    last = after
    for wall in walls:
        instants = _instants(wall, zone, repeat)
        if not instants:
            continue
        while pending and pending[0] < instants[0]:
            slot = heapq.heappop(pending)
            if slot > last:
                last = slot
                yield slot
        for instant in instants:
            heapq.heappush(pending, instant)
    for slot in sorted(pending):
        if slot > last:
            last = slot
            yield slot


def _instants(wall: datetime, zone: ZoneInfo, repeat: bool) -> tuple[datetime, ...]:
    """The UTC instants at which the local `wall` time fires (see the table at the top)."""
    before, after = _offsets(wall.replace(tzinfo=zone))
    first = (wall - before).replace(tzinfo=UTC)
    if before == after:
        return (first,)
    if before > after:  # the wall time happens twice
        return (first, (wall - after).replace(tzinfo=UTC)) if repeat else (first,)
    return () if repeat else (_jump(wall, zone, before, after),)


def _offsets(local: datetime) -> tuple[timedelta, timedelta]:
    """The UTC offsets of a local time read with fold=0 and fold=1 (PEP 495): they differ only
    in a repeated hour (first > second) or a skipped one (first < second)."""
    first, second = local.replace(fold=0).utcoffset(), local.replace(fold=1).utcoffset()
    return first or timedelta(0), second or timedelta(0)


def _jump(wall: datetime, zone: ZoneInfo, before: timedelta, after: timedelta) -> datetime:
    """The instant the clocks jumped over the skipped local time `wall` (bisected to 1 s)."""
    low = int((wall - after).replace(tzinfo=UTC).timestamp())  # still on the old offset
    high = int((wall - before).replace(tzinfo=UTC).timestamp())  # on the new one
    while high - low > 1:
        middle = (low + high) // 2
        if datetime.fromtimestamp(middle, zone).utcoffset() == after:
            high = middle
        else:
            low = middle
    return datetime.fromtimestamp(high, UTC)


def _restarted(rule: Any, base: datetime) -> Any:
    """`rule` with DTSTART moved a whole number of periods forward to just before `base`.

    dateutil expands every occurrence from DTSTART, so without this an hourly rule looked up
    in 2030 would replay ten years of hours. Only plain rules without COUNT (which counts from
    DTSTART) and with fixed-length periods can move; the occurrences after `base` are the same.
    """
    if not isinstance(rule, rrule) or rule._count is not None:
        return rule
    period = _RRULE_PERIODS.get(rule._freq)
    if period is None:
        return rule
    step = period * rule._interval
    skip = (base - rule._dtstart) // step
    return rule.replace(dtstart=rule._dtstart + skip * step) if skip > 0 else rule
