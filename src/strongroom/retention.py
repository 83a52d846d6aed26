"""Retention: which backups to keep and which to forget, and why.

A pure function, :func:`decide`, maps ``(backups, policy, now)`` to one :class:`Decision`
per backup. It reads no clock, no files and no environment, so the same input always gives
the same answer; ``forget``/``prune`` in ``services`` act on it.

Semantics (restic-style, each target on its own):

* Backups are grouped by target; a target's decisions never depend on another target.
* Within a target they are walked newest first (ties: higher ``backup_id`` first).
* ``keep_last=N`` keeps the N newest backups ("last k of N").
* ``keep_hourly/daily/weekly/monthly/yearly=N``: walking newest to oldest, the first
  backup seen in each not yet seen calendar period is kept ("daily k of N"), until N
  periods are used. Periods are computed in ``policy.timezone``: the local date, the ISO
  week (``isocalendar``), the local month and year, and the local wall-clock hour
  *together with its UTC offset*. So on a fall-back night the repeated hour (01:00 EDT and
  01:00 EST in New York) counts as two hourly periods, exactly as many as elapsed hours,
  and the skipped hour of a spring-forward night is simply absent.
* ``keep_within=D`` keeps backups with ``time >= now - D`` ("within 30d").
* ``keep_tags`` keeps backups carrying any of those tags ("tag <name>", one per tag).
* Safety backups (tag ``pre-restore``, taken by a restore of their target) take part in
  none of the rules above except ``keep_tags``, so they never fill a last/hourly/daily/
  weekly/monthly/yearly slot nor push a regular backup out of one. Their own rule, per
  target: the ``keep_safety`` newest ("safety 1 of 3") and every one younger than
  ``keep_safety_within`` ("safety within 7d"); defaults 3 and 7 days, 0/``None`` turns
  one off. A backup marked ``rollback_point`` (the safety backup ``rollback`` would
  restore) is always kept ("rollback point").
* Point-in-time extracts (tag ``pitr``: the dump ``restore --to-time … --database`` takes
  from a throwaway cluster) are treated like safety backups, with the same counts but their
  own ranking: ``keep_safety`` newest ("pitr 1 of 3") and every one younger than
  ``keep_safety_within`` ("pitr within 7d"); they fill no regular slot, are never the
  "newest verified good" backup, and count toward no safety rank either.
* Always kept, whatever the policy: pinned backups ("pinned"); each target's newest
  verified-good regular backup not newer than ``now`` ("newest verified good"); rollback
  points; backups newer than ``now`` ("newer than now", a clock skew is never a reason to
  delete).
* Backups newer than ``now`` take part in no count (last, buckets, within, safety): a
  skewed clock cannot push real backups out of their slots.
* An empty policy (nothing set, or every count 0) keeps everything ("no policy").
* Decisions come back in input order; a kept backup has at least one reason, a forgotten
  one has none. Applying :func:`decide` again to the kept backups keeps them all with the
  same reasons.
"""

from __future__ import annotations

import re
from collections.abc import Callable, Hashable, Iterable, Mapping, Sequence
from dataclasses import dataclass, field
from datetime import UTC, datetime, timedelta
from typing import TYPE_CHECKING
from zoneinfo import ZoneInfo, ZoneInfoNotFoundError

from strongroom.repository.ids import parse_iso

if TYPE_CHECKING:
    from strongroom.repository.manifest import Manifest

PRE_RESTORE_TAG = "pre-restore"
PITR_TAG = "pitr"  # a dump taken from a throwaway cluster recovered to a moment
DEFAULT_KEEP_SAFETY = 3
DEFAULT_KEEP_SAFETY_WITHIN = timedelta(days=7)
RETENTION_DAYS_VARIABLE = "BACKUP_RETENTION_DAYS"

REASON_NO_POLICY = "no policy"
REASON_FUTURE = "newer than now"
REASON_PINNED = "pinned"
REASON_VERIFIED = "newest verified good"
REASON_ROLLBACK_POINT = "rollback point"

_COUNT_FIELDS = (
    "keep_last",
    "keep_hourly",
    "keep_daily",
    "keep_weekly",
    "keep_monthly",
    "keep_yearly",
)

# Calendar-free unit lengths, largest first: a year is 365 days and a month 30 days.
_UNIT_DAYS = {"y": 365, "m": 30, "w": 7, "d": 1}
_DURATION = re.compile(
    r"(?:(?P<y>[0-9]+)y)?(?:(?P<m>[0-9]+)m)?(?:(?P<w>[0-9]+)w)?"
    r"(?:(?P<d>[0-9]+)d)?(?:(?P<h>[0-9]+)h)?"
)
_POSITIVE_INT = re.compile(r"[0-9]+")


def parse_duration(text: str) -> timedelta:
    """Parse ``30d``, ``12h``, ``2w``, ``1y2m3d`` into a positive timedelta.

    Units, each at most once and largest first: ``y`` (365 days), ``m`` (30 days), ``w``
    (7 days), ``d`` (days), ``h`` (hours). Lengths are calendar-free on purpose: a
    duration means the same everywhere and at every date. Raises ``ValueError``.
    """
    cleaned = text.strip()
    match = _DURATION.fullmatch(cleaned)
    if not cleaned or match is None:
        raise ValueError(
            f"invalid duration {text!r}: use numbers with units, largest first, such as "
            "'30d', '12h', '2w' or '1y2m3d' (y=365d, m=30d, w=7d, d, h)"
        )
    days = sum(int(match[unit] or 0) * n for unit, n in _UNIT_DAYS.items())
    hours = int(match["h"] or 0)
    try:
        duration = timedelta(days=days, hours=hours)
    except OverflowError:
        raise ValueError(f"invalid duration {text!r}: too long") from None
    if duration <= timedelta(0):
        raise ValueError(f"invalid duration {text!r}: must be longer than zero")
    return duration


def format_duration(duration: timedelta) -> str:
    """Render a duration as days and hours (``30d``, ``1d12h``), the reverse of parsing."""
    seconds = int(duration.total_seconds())
    days, rest = divmod(seconds, 86400)
    hours, rest = divmod(rest, 3600)
    minutes, seconds = divmod(rest, 60)
    parts = [
        f"{value}{unit}"
        for value, unit in ((days, "d"), (hours, "h"), (minutes, "min"), (seconds, "s"))
        if value
    ]
    return "".join(parts) or "0s"


@dataclass(frozen=True)
class RetentionPolicy:
    """What to keep. ``None`` (or 0) means the rule is off; ``timezone`` is an IANA name.
    ``keep_safety``/``keep_safety_within``: the safety backups' own rule (see the module
    docstring); they are not part of :meth:`is_empty` nor :meth:`describe`
    (:meth:`describe_safety`)."""

    keep_last: int | None = None
    keep_hourly: int | None = None
    keep_daily: int | None = None
    keep_weekly: int | None = None
    keep_monthly: int | None = None
    keep_yearly: int | None = None
    keep_within: timedelta | None = None
    keep_tags: frozenset[str] = field(default_factory=frozenset)
    timezone: str = "UTC"
    keep_safety: int | None = DEFAULT_KEEP_SAFETY
    keep_safety_within: timedelta | None = DEFAULT_KEEP_SAFETY_WITHIN

    def __post_init__(self) -> None:
        for name in (*_COUNT_FIELDS, "keep_safety"):
            value = getattr(self, name)
            if value is not None and (
                isinstance(value, bool) or not isinstance(value, int) or value < 0
            ):
                raise ValueError(f"{name} must be a whole number >= 0, got {value!r}")
        for name in ("keep_within", "keep_safety_within"):
            value = getattr(self, name)
            if value is not None and (not isinstance(value, timedelta) or value <= timedelta(0)):
                raise ValueError(f"{name} must be a positive duration, got {value!r}")
        tags: object = self.keep_tags
        if isinstance(tags, str) or not isinstance(tags, Iterable):
            raise ValueError(f"keep_tags must be a set of tag names, got {tags!r}")
        if not isinstance(tags, frozenset):
            object.__setattr__(self, "keep_tags", frozenset(tags))
        self.zone()  # validates the time zone name

    @classmethod
    def default(cls) -> RetentionPolicy:
        """7 daily, 4 weekly, 12 monthly: the policy of the scripts strongroom replaces."""
        return cls(keep_daily=7, keep_weekly=4, keep_monthly=12)

    @classmethod
    def from_environment(cls, env: Mapping[str, str]) -> RetentionPolicy | None:
        """``BACKUP_RETENTION_DAYS=N`` -> keep everything younger than N days.

        Returns ``None`` when the variable is unset or blank (so the caller falls back to
        its configured or default policy); raises ``ValueError`` unless N is a positive
        whole number.
        """
        raw = env.get(RETENTION_DAYS_VARIABLE)
        if raw is None or not raw.strip():
            return None
        text = raw.strip()
        if not _POSITIVE_INT.fullmatch(text) or int(text) == 0:
            raise ValueError(
                f"{RETENTION_DAYS_VARIABLE} must be a positive whole number of days, got {raw!r}"
            )
        try:
            within = timedelta(days=int(text))
        except OverflowError:
            raise ValueError(f"{RETENTION_DAYS_VARIABLE} is too large: {raw!r}") from None
        return cls(keep_within=within)

    def is_empty(self) -> bool:
        """True when no rule would keep anything (then :func:`decide` keeps everything)."""
        return (
            not any(getattr(self, name) for name in _COUNT_FIELDS)
            and self.keep_within is None
            and not self.keep_tags
        )

    def zone(self) -> ZoneInfo:
        """The policy's time zone (``ValueError`` for an unknown name)."""
        try:
            return ZoneInfo(self.timezone)
        except (ZoneInfoNotFoundError, ValueError, TypeError):
            raise ValueError(
                f"unknown time zone {self.timezone!r}: use an IANA name such as "
                "'UTC' or 'Europe/Berlin'"
            ) from None

    def describe(self) -> str:
        """One line for humans, e.g. ``7 daily, 4 weekly, 12 monthly``."""
        parts = [
            f"{getattr(self, name)} {name.removeprefix('keep_')}"
            for name in _COUNT_FIELDS
            if getattr(self, name)
        ]
        if self.keep_within is not None:
            parts.append(f"within {format_duration(self.keep_within)}")
        parts.extend(f"tag {tag}" for tag in sorted(self.keep_tags))
        if not parts:
            return REASON_NO_POLICY
        if self.timezone != "UTC" and any(getattr(self, n) for n in _COUNT_FIELDS[1:]):
            parts.append(f"in {self.timezone}")
        return ", ".join(parts)

    def describe_safety(self) -> str:
        """The safety backups' rule for humans, e.g. ``newest 3 and all younger than 7d``
        (plus the rollback point, always)."""
        parts = []
        if self.keep_safety:
            parts.append(f"newest {self.keep_safety}")
        if self.keep_safety_within is not None:
            parts.append(f"all younger than {format_duration(self.keep_safety_within)}")
        kept = " and ".join(parts) if parts else "none by count or age"
        return f"{kept}, and the rollback point of each database"


def is_regular(tags: Iterable[str]) -> bool:
    """Neither a safety backup (``pre-restore``) nor a point-in-time extract (``pitr``):
    the backups that fill the policy's slots and that health, metrics and drills take as a
    target's newest backup."""
    found = set(tags)
    return PRE_RESTORE_TAG not in found and PITR_TAG not in found


def _require_aware(moment: datetime, what: str) -> None:
    if not isinstance(moment, datetime) or moment.utcoffset() is None:
        raise ValueError(f"{what} must be a time-zone aware datetime, got {moment!r}")


@dataclass(frozen=True)
class BackupInfo:
    """What retention needs to know about one backup. ``time`` is aware."""

    backup_id: str
    target: str
    time: datetime
    tags: frozenset[str] = field(default_factory=frozenset)
    pinned: bool = False
    verified_good: bool = False
    rollback_point: bool = False  # the safety backup ``rollback`` would restore

    @property
    def safety(self) -> bool:
        """A safety backup (tag ``pre-restore``): decided by the safety rule only."""
        return PRE_RESTORE_TAG in self.tags

    @property
    def pitr(self) -> bool:
        """A point-in-time extract (tag ``pitr``, not a safety backup): decided by its own
        rule only."""
        return PITR_TAG in self.tags and not self.safety

    def __post_init__(self) -> None:
        _require_aware(self.time, f"time of backup {self.backup_id}")
        if not isinstance(self.tags, frozenset):
            object.__setattr__(self, "tags", frozenset(self.tags))

    @classmethod
    def from_manifest(
        cls,
        manifest: Manifest,
        pinned: bool = False,
        verified_good: bool = False,
        rollback_point: bool = False,
    ) -> BackupInfo:
        """Build from a manifest; the backup's time is when it finished (naive = UTC)."""
        finished = parse_iso(manifest.finished_at)
        if finished.utcoffset() is None:
            finished = finished.replace(tzinfo=UTC)
        return cls(
            backup_id=manifest.backup_id,
            target=manifest.target,
            time=finished,
            tags=frozenset(manifest.tags),
            pinned=pinned,
            verified_good=verified_good,
            rollback_point=rollback_point,
        )


@dataclass(frozen=True)
class Decision:
    """Keep or forget one backup; a kept backup has at least one reason, a forgotten none."""

    backup: BackupInfo
    keep: bool
    reasons: tuple[str, ...]


def _hour(local: datetime) -> Hashable:
    # The offset makes the repeated hour of a fall-back night two distinct periods.
    return (local.year, local.month, local.day, local.hour, local.utcoffset())


def _day(local: datetime) -> Hashable:
    return local.date()


def _week(local: datetime) -> Hashable:
    iso = local.isocalendar()
    return (iso.year, iso.week)


def _month(local: datetime) -> Hashable:
    return (local.year, local.month)


def _year(local: datetime) -> Hashable:
    return local.year


_BUCKETS: tuple[tuple[str, str, Callable[[datetime], Hashable]], ...] = (
    ("hourly", "keep_hourly", _hour),
    ("daily", "keep_daily", _day),
    ("weekly", "keep_weekly", _week),
    ("monthly", "keep_monthly", _month),
    ("yearly", "keep_yearly", _year),
)


def decide(backups: Sequence[BackupInfo], policy: RetentionPolicy, now: datetime) -> list[Decision]:
    """Decide keep/forget for every backup, in input order (see the module docstring)."""
    _require_aware(now, "now")
    zone = policy.zone()
    reasons: list[list[str]] = [[] for _ in backups]
    by_target: dict[str, list[int]] = {}
    for index, backup in enumerate(backups):
        by_target.setdefault(backup.target, []).append(index)
    for indices in by_target.values():
        _decide_target(backups, indices, policy, zone, now, reasons)
    return [
        Decision(backup=backup, keep=bool(why), reasons=tuple(why))
        for backup, why in zip(backups, reasons, strict=True)
    ]


def _decide_target(
    backups: Sequence[BackupInfo],
    indices: list[int],
    policy: RetentionPolicy,
    zone: ZoneInfo,
    now: datetime,
    reasons: list[list[str]],
) -> None:
    """Append the reasons of one target's backups, rule by rule in a fixed order."""
    newest_first = sorted(
        indices, key=lambda i: (backups[i].time, backups[i].backup_id, -i), reverse=True
    )
    in_past = [i for i in newest_first if backups[i].time <= now]
    past = [i for i in in_past if is_regular(backups[i].tags)]  # the policy's slots

    for i in newest_first:
        if backups[i].time > now:
            reasons[i].append(REASON_FUTURE)
    for i in newest_first:
        if backups[i].pinned:
            reasons[i].append(REASON_PINNED)
    verified = next((i for i in past if backups[i].verified_good), None)
    if verified is not None:
        reasons[verified].append(REASON_VERIFIED)
    _decide_safety(backups, [i for i in in_past if backups[i].safety], policy, now, reasons)
    pitr = [i for i in in_past if backups[i].pitr]
    _decide_safety(backups, pitr, policy, now, reasons, label="pitr")

    if policy.is_empty():
        for i in newest_first:
            reasons[i].append(REASON_NO_POLICY)
        return

    if policy.keep_last:
        for rank, i in enumerate(past[: policy.keep_last], start=1):
            reasons[i].append(f"last {rank} of {policy.keep_last}")

    for kind, name, period_of in _BUCKETS:
        wanted: int | None = getattr(policy, name)
        if not wanted:
            continue
        seen: set[Hashable] = set()
        for i in past:
            period = period_of(backups[i].time.astimezone(zone))
            if period in seen:
                continue
            seen.add(period)
            reasons[i].append(f"{kind} {len(seen)} of {wanted}")
            if len(seen) == wanted:
                break

    if policy.keep_within is not None:
        label = f"within {format_duration(policy.keep_within)}"
        try:
            cutoff: datetime | None = now - policy.keep_within
        except OverflowError:  # reaches before year 1: everything is within
            cutoff = None
        for i in past:
            if cutoff is None or backups[i].time >= cutoff:
                reasons[i].append(label)

    if policy.keep_tags:
        for i in newest_first:
            for tag in sorted(policy.keep_tags & backups[i].tags):
                reasons[i].append(f"tag {tag}")


def _decide_safety(
    backups: Sequence[BackupInfo],
    safety: list[int],
    policy: RetentionPolicy,
    now: datetime,
    reasons: list[list[str]],
    label: str = "safety",
) -> None:
    """The safety backups' own rule; ``safety``: one target's, not newer than now, newest
    first. ``label="pitr"``: the same rule for point-in-time extracts."""
    for i in safety:
        if backups[i].rollback_point:
            reasons[i].append(REASON_ROLLBACK_POINT)
    if policy.keep_safety:
        for rank, i in enumerate(safety[: policy.keep_safety], start=1):
            reasons[i].append(f"{label} {rank} of {policy.keep_safety}")
    if policy.keep_safety_within is not None:
        young = f"{label} within {format_duration(policy.keep_safety_within)}"
        try:
            cutoff: datetime | None = now - policy.keep_safety_within
        except OverflowError:
            cutoff = None
        for i in safety:
            if cutoff is None or backups[i].time >= cutoff:
                reasons[i].append(young)
