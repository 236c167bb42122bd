"""How values look on the dashboard's pages (Jinja filters): times, ages, durations, counts,
JSON. Times are shown in UTC (the database's clock is the one that counts); the page's
script can switch them to the browser's zone."""

from __future__ import annotations

import datetime as dt
import json
import urllib.parse
from typing import Any

from markupsafe import Markup, escape

from ..display import duration


def utc(moment: dt.datetime | None) -> str:
    if moment is None:
        return "-"
    return moment.astimezone(dt.timezone.utc).strftime("%Y-%m-%d %H:%M:%S.%f")[:-3] + "Z"


def iso(moment: dt.datetime | None) -> str:
    if moment is None:
        return ""
    return moment.astimezone(dt.timezone.utc).isoformat().replace("+00:00", "Z")


def seconds(value: Any) -> float | None:
    if value is None:
        return None
    if isinstance(value, dt.timedelta):
        return value.total_seconds()
    return float(value)


def dur(value: Any) -> str:
    """A duration (seconds or timedelta) for people: 820 ms, 4.2 s, 3.5 min, 2.0 h."""
    s = seconds(value)
    return "-" if s is None else duration(s)


def ago(moment: dt.datetime | None, now: dt.datetime) -> str:
    if moment is None:
        return "-"
    delta = (now - moment).total_seconds()
    if delta < 0:
        return "in " + duration(-delta)
    return duration(delta) + " ago"


def when(moment: dt.datetime | None, now: dt.datetime) -> Markup:
    """A <time> element: the age as text, the exact UTC time as its title."""
    if moment is None:
        return Markup('<span class="muted">-</span>')
    return Markup('<time class="rel" datetime="{0}" title="{1}">{2}</time>').format(
        iso(moment), utc(moment), ago(moment, now))


def stamp(moment: dt.datetime | None) -> Markup:
    """A <time> element with the exact time as text (UTC; local with the page's toggle)."""
    if moment is None:
        return Markup('<span class="muted">-</span>')
    return Markup('<time class="abs" datetime="{0}">{1}</time>').format(iso(moment), utc(moment))


def num(value: Any, capped: bool = False) -> str:
    if value is None:
        return "-"
    text = f"{int(value):,}"
    return text + "+" if capped else text


def compact(value: Any, limit: int = 120) -> str:
    text = json.dumps(value, ensure_ascii=False, default=str, separators=(", ", ": "))
    return text if len(text) <= limit else text[: limit - 1] + "…"


def pretty(value: Any) -> str:
    return json.dumps(value, ensure_ascii=False, default=str, indent=2, sort_keys=False)


def size(value: Any) -> str:
    if value is None:
        return "-"
    n = float(value)
    for unit in ("B", "kB", "MB", "GB", "TB"):
        if n < 1024 or unit == "TB":
            return f"{n:.0f} {unit}" if unit == "B" else f"{n:.1f} {unit}"
        n /= 1024
    return str(value)


def status_badge(status: str | None) -> Markup:
    if not status:
        return Markup("")
    return Markup('<span class="badge s-{0}">{0}</span>').format(escape(status))


def segment(value: Any) -> str:
    """A name as one segment of a URL's path (``/queues/{{ name|segment }}``): every character
    that is not a plain one quoted, slashes too."""
    return urllib.parse.quote(str(value), safe="")


FILTERS = {
    "utc": utc, "iso": iso, "dur": dur, "num": num, "compact": compact, "pretty": pretty,
    "size": size, "status": status_badge, "stamp": stamp, "segment": segment,
}
