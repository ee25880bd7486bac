"""Behaviour of dagrun.schedules: UTC slots for cron, interval and rrule across DST, catch-up,
validation. No clock is read: every test passes explicit instants.

DST dates used (2026): America/New_York springs forward Sun 8 March 02:00 EST -> 03:00 EDT
(07:00Z) and falls back Sun 1 November 02:00 EDT -> 01:00 EST (06:00Z); Europe/Berlin springs
forward Sun 29 March 02:00 CET -> 03:00 CEST (01:00Z) and falls back Sun 25 October
03:00 CEST -> 02:00 CET (01:00Z).
"""

from __future__ import annotations

import dataclasses
from datetime import datetime, timedelta, timezone
from itertools import pairwise
from zoneinfo import ZoneInfo

import pytest
from dateutil.rrule import rrulestr

from dagrun.errors import ConfigError
from dagrun.schedules import (
    CronSchedule,
    IntervalSchedule,
    RRuleSchedule,
    Schedule,
    make_schedule,
    missed_slots,
)

UTC = timezone.utc
NEW_YORK = ZoneInfo("America/New_York")
BERLIN = ZoneInfo("Europe/Berlin")


def utc(*args: int) -> datetime:
    return datetime(*args, tzinfo=UTC)


def local_day(
    schedule: Schedule, zone: ZoneInfo, year: int, month: int, day: int
) -> list[datetime]:
    """The slots whose local date is the given day."""
    start = datetime(year, month, day, tzinfo=zone).astimezone(UTC)
    end = (datetime(year, month, day, tzinfo=zone) + timedelta(days=1)).astimezone(UTC)
    return [
        slot
        for slot in schedule.slots_between(start - timedelta(microseconds=1), end)
        if slot < end
    ]


def walls(slots: list[datetime], zone: ZoneInfo) -> list[str]:
    return [slot.astimezone(zone).strftime("%H:%M%z") for slot in slots]


# --- daily fixed-time cron jobs across DST ---------------------------------------------------


@pytest.mark.parametrize(
    "zone, wall, day, expected",
    [
        (NEW_YORK, "01:30", (2026, 11, 1), utc(2026, 11, 1, 5, 30)),  # 01:30 EDT, not EST
        (BERLIN, "02:30", (2026, 10, 25), utc(2026, 10, 25, 0, 30)),  # 02:30 CEST, not CET
    ],
)
def test_daily_job_in_repeated_hour_runs_once_at_first_occurrence(zone, wall, day, expected):
    schedule = CronSchedule(f"30 {wall[:2]} * * *", zone.key)
    assert local_day(schedule, zone, *day) == [expected]
    around = list(
        schedule.slots_between(expected - timedelta(days=2), expected + timedelta(days=2))
    )
    assert around == [expected - timedelta(days=1), expected, expected + timedelta(days=1, hours=1)]
    assert [slot.astimezone(zone).strftime("%H:%M") for slot in around] == [wall] * 3


@pytest.mark.parametrize(
    "zone, day, expected",
    [
        (NEW_YORK, (2026, 3, 8), utc(2026, 3, 8, 7)),  # 03:00 EDT
        (BERLIN, (2026, 3, 29), utc(2026, 3, 29, 1)),  # 03:00 CEST
    ],
)
def test_daily_job_in_skipped_hour_runs_once_when_clocks_jump(zone, day, expected):
    schedule = CronSchedule("30 2 * * *", zone.key)
    assert local_day(schedule, zone, *day) == [expected]
    assert walls([expected], zone)[0].startswith("03:00")
    around = list(
        schedule.slots_between(expected - timedelta(days=1), expected + timedelta(days=1))
    )
    # the day before at 02:30 standard time, the jump at 03:00, the day after at 02:30 summer time
    assert around == [
        expected - timedelta(minutes=1410),
        expected,
        expected + timedelta(minutes=1410),
    ]


def test_several_skipped_fixed_times_collapse_into_one_run():
    for cron in ("0,30 2 * * *", "0 2,3 * * *", "15 2 * * *"):
        assert local_day(CronSchedule(cron, "Europe/Berlin"), BERLIN, 2026, 3, 29) == [
            utc(2026, 3, 29, 1)
        ], cron


# --- hourly and wildcard jobs: every real hour -----------------------------------------------


@pytest.mark.parametrize(
    "zone, day, runs",
    [
        (NEW_YORK, (2026, 11, 1), 25),
        (BERLIN, (2026, 10, 25), 25),
        (NEW_YORK, (2026, 3, 8), 23),
        (BERLIN, (2026, 3, 29), 23),
    ],
)
@pytest.mark.parametrize("minute", [0, 30])
def test_hourly_job_runs_every_real_hour_across_transitions(zone, day, runs, minute):
    slots = local_day(CronSchedule(f"{minute} * * * *", zone.key), zone, *day)
    assert len(slots) == runs
    assert all(later - earlier == timedelta(hours=1) for earlier, later in pairwise(slots))
    assert {slot.minute for slot in slots} == {minute}
    assert all(slot.tzinfo is UTC for slot in slots)


def test_hourly_job_fires_in_both_passes_of_the_repeated_hour():
    slots = CronSchedule("0 * * * *", "America/New_York").slots_between(
        utc(2026, 11, 1, 3, 30), utc(2026, 11, 1, 7, 30)
    )
    assert walls(list(slots), NEW_YORK) == ["00:00-0400", "01:00-0400", "01:00-0500", "02:00-0500"]


def test_wildcard_minute_with_fixed_hour_fires_in_both_passes_like_vixie_cron():
    fixed = local_day(CronSchedule("0,30 1 * * *", "America/New_York"), NEW_YORK, 2026, 11, 1)
    wildcard = local_day(CronSchedule("*/30 1 * * *", "America/New_York"), NEW_YORK, 2026, 11, 1)
    assert walls(fixed, NEW_YORK) == ["01:00-0400", "01:30-0400"]
    assert walls(wildcard, NEW_YORK) == ["01:00-0400", "01:30-0400", "01:00-0500", "01:30-0500"]


@pytest.mark.parametrize(
    "start",
    [
        utc(2026, 11, 1, 5, 0),
        utc(2026, 11, 1, 5, 30),
        utc(2026, 11, 1, 6, 10),
        utc(2026, 11, 1, 6, 45),
    ],
)
def test_a_window_starting_inside_the_repeated_hour_misses_nothing(start):
    schedule = CronSchedule("*/15 * * * *", "America/New_York")
    slots = list(schedule.slots_between(start, utc(2026, 11, 1, 8)))
    expected = []
    slot = utc(2026, 11, 1, 8)
    while slot > start:
        expected.insert(0, slot)
        slot -= timedelta(minutes=15)
    assert slots == expected


@pytest.mark.parametrize(
    "schedule, start",
    [
        (CronSchedule("*/20 * * * *", "America/New_York"), utc(2026, 10, 31, 20)),
        (CronSchedule("30 1,2 * * *", "America/New_York"), utc(2026, 3, 6)),
        (CronSchedule("0 2 * * *", "Europe/Berlin"), utc(2026, 10, 20)),
        (CronSchedule("*/30 2 * * *", "Europe/Berlin"), utc(2026, 3, 27)),
        (RRuleSchedule("FREQ=HOURLY;BYMINUTE=0,40", "Europe/Berlin"), utc(2026, 10, 24, 20)),
    ],
)
def test_stepping_one_slot_at_a_time_matches_one_window(schedule, start):
    window = list(schedule.slots_between(start, start + timedelta(days=4)))
    stepped, after = [], start
    while len(stepped) < len(window):
        [after] = schedule.next_slots(after, 1)
        stepped.append(after)
    assert stepped == window
    assert window == sorted(set(window))


# --- intervals: pure elapsed time ------------------------------------------------------------


def test_interval_slots_are_real_hours_aligned_to_the_anchor_across_dst():
    anchor = datetime(2026, 1, 1, 0, 17, tzinfo=BERLIN)
    schedule = IntervalSchedule(3600, anchor, "Europe/Berlin")
    for day, runs in (((2026, 3, 29), 23), ((2026, 10, 25), 25)):
        slots = local_day(schedule, BERLIN, *day)
        assert len(slots) == runs
        assert {slot.minute for slot in slots} == {17}
        assert all(b - a == timedelta(hours=1) for a, b in pairwise(slots))


def test_daily_interval_keeps_its_utc_time_so_local_time_shifts():
    schedule = IntervalSchedule(timedelta(days=1), datetime(2026, 3, 1, 2, 30, tzinfo=NEW_YORK))
    slots = list(schedule.slots_between(utc(2026, 3, 7), utc(2026, 3, 10)))
    assert slots == [utc(2026, 3, 7, 7, 30), utc(2026, 3, 8, 7, 30), utc(2026, 3, 9, 7, 30)]
    assert walls(slots, NEW_YORK) == ["02:30-0500", "03:30-0400", "03:30-0400"]


def test_interval_anchor_is_the_first_slot_and_fractions_are_exact():
    anchor = utc(2026, 5, 1, 12)
    schedule = IntervalSchedule(0.25, anchor)
    assert schedule.next_slots(utc(2026, 1, 1), 3) == [
        anchor,
        anchor + timedelta(seconds=0.25),
        anchor + timedelta(seconds=0.5),
    ]
    far = anchor + timedelta(days=3000)
    assert schedule.next_slots(far, 1) == [far + timedelta(seconds=0.25)]
    assert IntervalSchedule(3600).next_slots(utc(2026, 6, 1, 10, 59, 59), 1) == [
        utc(2026, 6, 1, 11)
    ]


def test_interval_normalizes_and_describes():
    assert IntervalSchedule(3600) == IntervalSchedule(timedelta(hours=1), utc(2020, 1, 1))
    assert IntervalSchedule(3600, utc(2026, 1, 1)).describe() == (
        "every 3600 s from 2026-01-01T00:00:00+00:00"
    )
    assert IntervalSchedule(1.5, utc(2026, 1, 1), "Europe/Berlin").describe() == (
        "every 1.5 s from 2026-01-01T01:00:00+01:00 (Europe/Berlin)"
    )


# --- rrule -----------------------------------------------------------------------------------


def test_weekly_rrule_keeps_local_time_across_berlin_dst():
    schedule = RRuleSchedule("FREQ=WEEKLY;BYDAY=MO,WE;BYHOUR=9;BYMINUTE=0", "Europe/Berlin")
    spring = list(schedule.slots_between(utc(2026, 3, 22), utc(2026, 4, 2)))
    assert spring == [
        utc(2026, 3, 23, 8),
        utc(2026, 3, 25, 8),
        utc(2026, 3, 30, 7),
        utc(2026, 4, 1, 7),
    ]
    autumn = list(schedule.slots_between(utc(2026, 10, 19), utc(2026, 10, 29)))
    assert autumn == [
        utc(2026, 10, 19, 7),
        utc(2026, 10, 21, 7),
        utc(2026, 10, 26, 8),
        utc(2026, 10, 28, 8),
    ]


def test_rrule_in_skipped_and_repeated_hours_runs_once():
    schedule = RRuleSchedule("DTSTART:20260101T023000\nRRULE:FREQ=DAILY", "Europe/Berlin")
    assert local_day(schedule, BERLIN, 2026, 3, 29) == [utc(2026, 3, 29, 1)]
    assert local_day(schedule, BERLIN, 2026, 10, 25) == [utc(2026, 10, 25, 0, 30)]
    hourly = RRuleSchedule("FREQ=HOURLY", "America/New_York")
    assert len(local_day(hourly, NEW_YORK, 2026, 11, 1)) == 24  # wall-clock hours, each once


def test_rrule_dtstart_tzid_count_and_exdate():
    text = (
        "DTSTART;TZID=America/New_York:20261030T013000\n"
        "RRULE:FREQ=DAILY;COUNT=4\n"
        "EXDATE;TZID=America/New_York:20261031T013000"
    )
    schedule = RRuleSchedule(text, "America/New_York")
    assert schedule.next_slots(utc(2026, 1, 1), 10) == [
        utc(2026, 10, 30, 5, 30),
        utc(2026, 11, 1, 5, 30),
        utc(2026, 11, 2, 6, 30),
    ]
    assert RRuleSchedule("DTSTART:20260105T090000Z\nRRULE:FREQ=DAILY;COUNT=2").next_slots(
        utc(2026, 1, 5, 9), 5
    ) == [utc(2026, 1, 6, 9)]


@pytest.mark.parametrize(
    "text",
    [
        "FREQ=HOURLY;INTERVAL=5",
        "FREQ=DAILY;INTERVAL=3;BYHOUR=6,18",
        "FREQ=WEEKLY;INTERVAL=2;BYDAY=TU",
        "FREQ=MINUTELY;INTERVAL=7;BYHOUR=9",
        "DTSTART:20210314T011500\nRRULE:FREQ=HOURLY;INTERVAL=11",
    ],
)
def test_rrule_far_from_dtstart_matches_a_full_expansion(text):
    start, end = datetime(2026, 6, 10), datetime(2026, 6, 15)
    full = rrulestr(text, dtstart=datetime(2020, 1, 1)).between(start, end, inc=True)
    slots = RRuleSchedule(text).slots_between(start.replace(tzinfo=UTC), end.replace(tzinfo=UTC))
    assert [slot.replace(tzinfo=None) for slot in slots] == [wall for wall in full if wall > start]


# --- next_slots and describe -----------------------------------------------------------------


def test_next_slots_are_strictly_after_ascending_and_utc():
    schedule = CronSchedule("0 2 * * *", "Europe/Berlin")
    on_slot = datetime(2026, 1, 5, 2, tzinfo=BERLIN)
    slots = schedule.next_slots(on_slot, 3)
    assert slots == [utc(2026, 1, 6, 1), utc(2026, 1, 7, 1), utc(2026, 1, 8, 1)]
    assert all(slot.tzinfo is UTC for slot in slots)
    assert schedule.next_slots(on_slot - timedelta(microseconds=1), 1) == [utc(2026, 1, 5, 1)]
    assert schedule.next_slots(on_slot, 0) == []


def test_every_minute_for_a_week_is_linear():
    slots = CronSchedule("* * * * *").next_slots(utc(2026, 3, 1), 7 * 24 * 60)
    assert slots[0] == utc(2026, 3, 1, 0, 1) and slots[-1] == utc(2026, 3, 8)
    assert len(set(slots)) == 10080


def test_describe():
    assert (
        CronSchedule("0 2 * * *", "Europe/Berlin").describe() == "cron '0 2 * * *' (Europe/Berlin)"
    )
    assert RRuleSchedule("FREQ=DAILY").describe() == "rrule 'FREQ=DAILY' (UTC)"
    assert CronSchedule("@daily").next_slots(utc(2026, 1, 1), 1) == [utc(2026, 1, 2)]
    with pytest.raises(dataclasses.FrozenInstanceError):
        CronSchedule("@daily").cron = "@hourly"  # type: ignore[misc]


# --- missed_slots ----------------------------------------------------------------------------

HOURLY = CronSchedule("0 * * * *")


def test_missed_slots_without_catchup_runs_only_the_latest():
    assert missed_slots(HOURLY, utc(2026, 1, 1, 3), utc(2026, 1, 1, 9, 30), catchup=False) == [
        utc(2026, 1, 1, 9)
    ]


def test_missed_slots_with_catchup_runs_all_in_half_open_window():
    slots = missed_slots(HOURLY, utc(2026, 1, 1, 3), utc(2026, 1, 1, 9), catchup=True)
    assert slots == [utc(2026, 1, 1, hour) for hour in range(4, 10)]


def test_missed_slots_catchup_is_bounded_to_the_most_recent():
    every_minute = CronSchedule("* * * * *")
    now = utc(2026, 6, 1, 12)
    slots = missed_slots(every_minute, utc(2025, 6, 1), now, catchup=True, max_catchup=100)
    assert slots == [now - timedelta(minutes=minutes) for minutes in range(99, -1, -1)]
    assert missed_slots(HOURLY, utc(2026, 1, 1), utc(2026, 1, 2), catchup=True, max_catchup=3) == [
        utc(2026, 1, 1, 22),
        utc(2026, 1, 1, 23),
        utc(2026, 1, 2),
    ]


def test_missed_slots_nothing_due():
    registered = utc(2026, 1, 1, 3, 5)  # a new deployment passes its registration time
    assert missed_slots(HOURLY, registered, utc(2026, 1, 1, 3, 59), catchup=True) == []
    assert missed_slots(HOURLY, utc(2026, 1, 1, 3), utc(2026, 1, 1, 3), catchup=False) == []
    yearly = CronSchedule("0 0 1 1 *")
    assert missed_slots(yearly, utc(2026, 1, 1), utc(2026, 12, 31), catchup=False) == []
    assert missed_slots(yearly, utc(2020, 6, 1), utc(2026, 12, 31), catchup=False) == [
        utc(2026, 1, 1)
    ]


# --- validation ------------------------------------------------------------------------------

UNKNOWN_ZONE = "is unknown (expected an IANA name such as 'Europe/Berlin')"
TZID_RULE = "DTSTART;TZID=America/New_York:20260101T090000\nRRULE:FREQ=DAILY"
UTC_RULE = "DTSTART:20260101T090000Z\nRRULE:FREQ=DAILY"


@pytest.mark.parametrize(
    "kwargs, message",
    [
        (
            {"cron": "0 25 * * *"},
            "cron '0 25 * * *' is invalid: [0 25 * * *] is not acceptable, out of range",
        ),
        (
            {"cron": "0 2 * *"},
            (
                "cron '0 2 * *' is invalid: expected 5 fields (minute hour day-of-month month "
                "day-of-week), got 4"
            ),
        ),
        ({"cron": "0 0 30 2 *"}, "cron '0 0 30 2 *' is invalid: failed to find next date"),
        ({"cron": "0 2 * * *", "timezone": "Mars/Base"}, f"timezone 'Mars/Base' {UNKNOWN_ZONE}"),
        ({"interval": 3600, "timezone": "America"}, f"timezone 'America' {UNKNOWN_ZONE}"),
        ({"interval": 0}, "interval must be > 0 seconds, got 0"),
        ({"interval": -5.0}, "interval must be > 0 seconds, got -5.0"),
        ({"interval": timedelta(0)}, "interval must be > 0 seconds, got datetime.timedelta(0)"),
        ({"interval": float("nan")}, "interval nan must be a finite number of seconds"),
        ({"interval": "1h"}, "interval '1h' must be seconds or a timedelta"),
        (
            {"interval": 60, "anchor": datetime(2026, 1, 1)},
            "anchor 2026-01-01T00:00:00 has no timezone; pass an aware one",
        ),
        (
            {"rrule": "FREQ=SOMETIMES"},
            "rrule 'FREQ=SOMETIMES' is invalid: invalid 'FREQ': SOMETIMES",
        ),
        (
            {"rrule": "FREQ=DAILY;INTERVAL=0"},
            "rrule 'FREQ=DAILY;INTERVAL=0' is invalid: INTERVAL must be a positive integer, got '0'",
        ),
        (
            {"rrule": "FREQ=YEARLY;BYMONTH=2;BYMONTHDAY=30"},
            "rrule 'FREQ=YEARLY;BYMONTH=2;BYMONTHDAY=30' is invalid: it never fires",
        ),
        (
            {"rrule": TZID_RULE, "timezone": "Europe/Berlin"},
            (
                f"rrule {TZID_RULE!r} is invalid: DTSTART TZID 'America/New_York' differs from "
                "timezone 'Europe/Berlin'"
            ),
        ),
        (
            {"rrule": UTC_RULE, "timezone": "Europe/Berlin"},
            (
                f"rrule {UTC_RULE!r} is invalid: a DTSTART in UTC ('Z') needs timezone 'UTC'; "
                "write DTSTART as a local time in 'Europe/Berlin'"
            ),
        ),
        ({}, "give exactly one of cron, interval, rrule (got none)"),
        (
            {"cron": "@daily", "interval": 60},
            "give exactly one of cron, interval, rrule (got cron and interval)",
        ),
        (
            {"cron": "@daily", "anchor": utc(2026, 1, 1)},
            "anchor applies only to an interval schedule",
        ),
    ],
)
def test_invalid_schedules_fail_with_one_line_naming_deployment_and_field(kwargs, message):
    with pytest.raises(ConfigError) as raised:
        make_schedule(owner="nightly", **kwargs)
    assert str(raised.value) == f"deployment 'nightly': {message}"
    assert "\n" not in str(raised.value)


def test_direct_construction_errors_say_schedule():
    with pytest.raises(ConfigError, match=r"^schedule: cron '61 \* \* \* \*' is invalid: "):
        CronSchedule("61 * * * *")
    with pytest.raises(ConfigError, match=r"^schedule: interval must be > 0 seconds, got -1$"):
        IntervalSchedule(-1)


def test_make_schedule_builds_each_kind():
    assert make_schedule(cron="0 2 * * *", timezone="Europe/Berlin", owner="x") == CronSchedule(
        "0 2 * * *", "Europe/Berlin"
    )
    assert make_schedule(interval=60, anchor=utc(2026, 1, 1)) == IntervalSchedule(
        60, utc(2026, 1, 1)
    )
    assert make_schedule(rrule="FREQ=DAILY") == RRuleSchedule("FREQ=DAILY")


def test_naive_datetimes_are_rejected():
    naive = datetime(2026, 1, 1)
    message = r"^schedule: {} 2026-01-01T00:00:00 has no timezone; pass an aware one$"
    with pytest.raises(ConfigError, match=message.format("start")):
        list(HOURLY.slots_between(naive, utc(2026, 1, 2)))
    with pytest.raises(ConfigError, match=message.format("end")):
        list(HOURLY.slots_between(utc(2026, 1, 1), naive))
    with pytest.raises(ConfigError, match=message.format("after")):
        HOURLY.next_slots(naive, 1)
    with pytest.raises(ConfigError, match=message.format("now")):
        missed_slots(HOURLY, utc(2026, 1, 1), naive, catchup=False)
    with pytest.raises(ConfigError, match=r"^schedule: max_catchup must be >= 1, got 0$"):
        missed_slots(HOURLY, utc(2026, 1, 1), utc(2026, 1, 2), catchup=True, max_catchup=0)
