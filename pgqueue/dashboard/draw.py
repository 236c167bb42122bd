"""The timeline's SVG, written directly (a template would spend ten times as long on a window of
a thousand bars). Every bar is an ``<a>`` to its job with a ``<title>`` tooltip and data attributes
(``data-job-id``, ``data-attempt``, ``data-outcome``, ``data-runner-id``); every lane a ``<g>``
with ``data-runner-id`` and ``data-state``; markers carry ``data-marker`` (dead, stopped,
heartbeat). Colours come from the stylesheet (classes only: the Content-Security-Policy allows
no inline style)."""

from __future__ import annotations

from html import escape
from typing import Callable

from markupsafe import Markup

from .timeline import BAR_HEIGHT, Timeline


def _n(value: float) -> str:
    return f"{value:.1f}"


def timeline_svg(picture: Timeline, url: Callable[[str], str], *, compact: bool = False) -> Markup:
    out: list[str] = []
    add = out.append
    jobs = escape(url("/jobs/"))
    bar_height = f"{BAR_HEIGHT:g}"
    height = int(picture.height)
    width = int(picture.width)
    add(f'<svg class="timeline{" compact" if compact else ""}" viewBox="0 0 {width} {height}" role="img" '
        f'aria-label="Attempts per runner over time" data-bars="{picture.bars}">')
    add('<g class="axis">')
    add(f'<line class="axis-line" x1="{_n(picture.plot_left)}" x2="{_n(picture.plot_right)}" y1="18" y2="18"></line>')
    for tick in picture.ticks:
        x = _n(tick.x)
        add(f'<line class="tick" x1="{x}" x2="{x}" y1="14" y2="{height - 4}"></line>')
        if tick.label:
            add(f'<text class="tick-label" x="{x}" y="11">{escape(tick.label)}</text>')
    if picture.now_x is not None:
        x = _n(picture.now_x)
        add(f'<line class="now" x1="{x}" x2="{x}" y1="14" y2="{height - 4}"><title>now</title></line>')
    add("</g>")
    for lane in picture.lanes:
        ended = f' data-ended-at="{lane.ended_at.isoformat()}"' if lane.ended_at else ""
        add(f'<g class="lane lane-{escape(lane.state)}" data-runner-id="{lane.runner_id}" '
            f'data-state="{escape(lane.state)}"{ended}>')
        add(f'<rect class="lane-bg" x="0" y="{_n(lane.y)}" width="{width}" height="{_n(lane.height)}"></rect>')
        state = f" · {lane.state}" if lane.state != "running" and not compact else ""
        reason = f" ({lane.reason})" if lane.reason else ""
        add(f'<a href="{escape(url("/runners/" + str(lane.runner_id)))}"><text class="lane-label" x="6" '
            f'y="{_n(lane.y + 14)}">{escape(lane.label + state)}<title>'
            f'{escape(f"{lane.label}: {lane.detail}, {lane.state}{reason}")}</title></text></a>')
        if not compact:
            add(f'<text class="lane-detail" x="6" y="{_n(lane.y + 26)}">{escape(lane.detail)}</text>')
        if lane.life_x1 is not None and lane.life_x2 is not None:
            y = _n(lane.y + 3)
            solid_end = lane.silent_x1 if lane.silent_x1 is not None else lane.life_x2
            add(f'<line class="life" x1="{_n(lane.life_x1)}" x2="{_n(solid_end)}" y1="{y}" y2="{y}"></line>')
            if lane.silent_x1 is not None:
                add(f'<line class="life silent" x1="{_n(lane.silent_x1)}" x2="{_n(lane.life_x2)}" '
                    f'y1="{y}" y2="{y}"><title>no heartbeat</title></line>')
        for bar in lane.bars:
            outcome = escape(bar.outcome)
            add(f'<a href="{jobs}{bar.job_id}" class="bar-link" data-job-id="{bar.job_id}" '
                f'data-attempt="{bar.attempt}" data-outcome="{outcome}" data-runner-id="{bar.runner_id}">'
                f'<rect class="bar o-{outcome}" x="{bar.x:.1f}" y="{bar.y:.1f}" width="{bar.width:.1f}" '
                f'height="{bar_height}" rx="2"><title>{escape(bar.title)}</title></rect></a>')
        for marker in lane.markers:
            x = _n(marker.x)
            add(f'<g class="marker m-{escape(marker.kind)}" data-marker="{escape(marker.kind)}">'
                f'<line x1="{x}" x2="{x}" y1="{_n(marker.y1)}" y2="{_n(marker.y2)}"></line>')
            if marker.kind == "dead":
                add(f'<path d="M{_n(marker.x - 5)} {_n(marker.y1)} l10 10 m0 -10 l-10 10"></path>')
            add(f"<title>{escape(marker.title)}</title></g>")
        add("</g>")
    for link in picture.links:
        add(f'<path class="link-line k-{escape(link.kind)}" data-job-id="{link.job_id}" '
            f'd="M{_n(link.x1)} {_n(link.y1)} L{_n(link.x2)} {_n(link.y2)}"><title>job {link.job_id} '
            f'moved on ({escape(link.kind)})</title></path>')
    add("</svg>")
    return Markup("".join(out))
