"""A `Report` as text for the terminal, JSON, CSV, or one self-contained HTML page.

Every format shows the same numbers from the same `Report` value.  The HTML
page has no external asset of any kind (inline CSS, inline SVG charts, no
script) and a Content-Security-Policy that forbids loading anything, so
opening it never touches the network; all text from messages is escaped.
"""

from __future__ import annotations

import csv
import io
import json
import textwrap
from collections.abc import Iterable, Sequence
from dataclasses import dataclass
from html import escape

from classifier.display import csv_cell
from classifier.report.build import (
    CHECK_WORDS,
    LIKELY_FALSE_POSITIVE_MEANS,
    PLACES,
    TIMELINE_KEYS,
    PolicyOutcome,
    Report,
)

_WORDS = ("pass", "fail", "softfail", "neutral", "none", "permerror", "temperror", "policy")
_LABELS = {"spf": "SPF", "dkim": "DKIM", "arc": "ARC", "dmarc": "DMARC"}


def _words(report: Report) -> list[str]:
    extra = sorted({w for v in report.results.values() for w in v} - set(_WORDS))
    return [*_WORDS, *extra]


Cell = tuple[object, str]  # a value, and the key the HTML page marks it with ("" for none)


@dataclass(frozen=True)
class Table:
    """One table of the report, shared by the terminal and the HTML renderers."""

    id: str
    title: str
    header: tuple[str, ...]
    rows: tuple[tuple[Cell, ...], ...]


def _row(name: str, obj: object, keys: Sequence[str], prefix: str) -> tuple[Cell, ...]:
    return ((name, ""), *((getattr(obj, k), f"{prefix}.{name}.{k}") for k in keys))


def tables(report: Report) -> list[Table]:
    """Gives the report's tables: results, policies, domains, suffixes, forwarded, timeline."""
    words = _words(report)
    names = [p.name for p in report.policies]
    res = report.results
    results = tuple(
        (
            (_LABELS[c], ""),
            *((res[c][w], f"results.{c}.{w}") if w in res[c] else ("-", "") for w in words),
        )
        for c in CHECK_WORDS
    )
    policies = tuple(
        (
            (p.name, ""),
            (p.mode, ""),
            *((p.counts[k], f"policy.{p.name}.{k}") for k in PLACES),
            (len(p.moves), f"policy.{p.name}.moves"),
            (p.likely_false_positives, f"policy.{p.name}.likely_false_positives"),
        )
        for p in report.policies
    )
    domain_keys = ("messages", "failing", "spf_fail", "dkim_fail", "dmarc_fail")
    suffix_keys = ("messages", "failing", "dmarc_pass", "filed_now")
    suffixes = tuple(
        _row(s.suffix, s, suffix_keys, "suffix")
        + tuple((s.filed[n], f"suffix.{s.suffix}.filed.{n}") for n in names)
        for s in report.suffixes
    )
    forwarded = tuple(
        (
            *_row(f.via, f, ("messages", "dkim_pass", "arc_pass"), "forwarded"),
            (f.list_id or "-", ""),
            (f.fix + (" (already trusted)" if f.already_trusted else ""), ""),
        )
        for f in report.forwarded
    )
    timeline = tuple(
        ((t.label, ""), *((t.counts[k], f"timeline.{t.label}.{k}") for k in TIMELINE_KEYS))
        for t in report.timeline
    )
    return [
        Table("results", "Results", ("", *words), results),
        Table(
            "policies",
            "Policies (observe mode counted as enforced)",
            ("policy", "mode", *PLACES, "moves", "likely false positives"),
            policies,
        ),
        Table(
            "domains",
            "Top failing From domains",
            ("domain", "messages", "failing", "SPF fail", "DKIM fail", "DMARC fail"),
            tuple(_row(d.domain, d, domain_keys, "domain") for d in report.domains),
        ),
        Table(
            "suffixes",
            "Domain suffixes (filed: not delivered to the inbox)",
            (
                "suffix",
                "messages",
                "failing",
                "DMARC pass",
                "filed now",
                *(f"filed by {n}" for n in names),
            ),
            suffixes,
        ),
        Table(
            "forwarded",
            "Forwarded or list mail failing SPF but passing DKIM or ARC",
            ("via", "messages", "DKIM pass", "ARC pass", "List-Id", "fix"),
            forwarded,
        ),
        Table(
            "timeline",
            f"DMARC results per {report.granularity}",
            ("period", *TIMELINE_KEYS),
            timeline,
        ),
    ]


def grid(header: Sequence[str], rows: Iterable[Sequence[object]]) -> list[str]:
    """Gives aligned text lines: the first column left-aligned, numbers right-aligned."""
    table = [list(map(str, header)), *([str(c) for c in r] for r in rows)]
    widths = [max(len(r[i]) for r in table) for i in range(len(header))]
    out = []
    for row in table:
        cells = [row[0].ljust(widths[0])]
        cells += [
            c.rjust(w) if c[:1].isdigit() or c == "-" else c.ljust(w)
            for c, w in zip(row[1:], widths[1:], strict=True)
        ]
        out.append("  ".join(cells).rstrip())
    return out


def _period(report: Report) -> str:
    span = f"{report.first} … {report.last}" if report.first != report.last else report.first
    since = f" (since {report.since})" if report.since else ""
    if not report.messages:
        return f"no messages{since}"
    return f"{report.messages} messages delivered {span}{since}"


def _scan_line(report: Report) -> str:
    s = report.scan
    if not s:
        return ""
    rate = f", {s.get('rate', 0):g} msg/s" if s.get("rate") else ""
    return (
        f"scan: {s.get('checked', 0)} checked, {s.get('cached', 0)} from cache, "
        f"{s.get('dns_queries', 0)} DNS queries, {s.get('seconds', 0):g} s{rate}"
    )


def _move_lines(outcome: PolicyOutcome, limit: int) -> list[str]:
    out = [f"Moves under {outcome.name} (likely false positives first, marked !)"]
    if not outcome.moves:
        return [*out, "  none: every message is where this policy would put it"]
    out += textwrap.wrap(
        "! " + LIKELY_FALSE_POSITIVE_MEANS, 78, initial_indent="  ", subsequent_indent="    "
    )
    for move in outcome.moves[:limit]:
        mark = "!" if move.likely_false_positive else " "
        out.append(
            f"  {mark} {move.date}  {move.folder} → {move.would}  "
            f"{move.sender or '(no From)'}  “{move.subject}”"
        )
        out.extend(f"        {reason}" for reason in move.reasons)
    if len(outcome.moves) > limit:
        out.append(f"    … and {len(outcome.moves) - limit} more (--json, --csv or --html)")
    return out


def render_table(report: Report, limit: int = 20) -> str:
    """Gives the report as plain text for a terminal (the timeline is left to --html)."""
    lines = [f"authsieve report: {_period(report)}"]
    if scan := _scan_line(report):
        lines.append(scan)
    for table in tables(report):
        if table.id == "timeline":
            continue
        lines += ["", table.title]
        rows = [[value for value, _ in row] for row in table.rows]
        lines += grid(table.header, rows) if rows else ["  none"]
        if table.id == "results":
            none = report.results["spf"]["none"]
            lines.append(
                f"SPF none rate: {report.spf_none_rate:.1f}% ({none} of {report.messages})"
            )
            lines.append(
                "Where the mail is now: " + ", ".join(f"{p} {report.now[p]}" for p in PLACES)
            )
        if table.id == "policies":
            for outcome in report.policies:
                lines += ["", *_move_lines(outcome, limit)]
    return "\n".join(lines) + "\n"


def render_json(report: Report) -> str:
    """Gives the report as one JSON document."""
    return json.dumps(report.to_dict(), ensure_ascii=False, indent=2) + "\n"


def csv_rows(report: Report) -> list[tuple[str, str, str, str, object]]:
    """Gives the report as (section, policy, item, key, value) rows: one number or text each."""
    rows: list[tuple[str, str, str, str, object]] = [("messages", "", "", "total", report.messages)]
    for check, counts in report.results.items():
        rows += [("results", "", check, word, n) for word, n in counts.items()]
    rows.append(("results", "", "spf", "none_rate_percent", f"{report.spf_none_rate:.1f}"))
    rows += [("now", "", "", place, report.now[place]) for place in PLACES]
    for p in report.policies:
        rows += [("policy", p.name, "", "mode", p.mode), ("policy", p.name, "", "source", p.source)]
        rows += [("policy", p.name, "", place, p.counts[place]) for place in PLACES]
        rows += [
            ("policy", p.name, "", "moves", len(p.moves)),
            ("policy", p.name, "", "likely_false_positives", p.likely_false_positives),
        ]
        for m in p.moves:
            for key in ("folder", "now", "would", "date", "sender", "subject"):
                rows.append(("move", p.name, m.path, key, getattr(m, key)))
            rows.append(
                ("move", p.name, m.path, "likely_false_positive", int(m.likely_false_positive))
            )
            rows.append(("move", p.name, m.path, "reasons", " | ".join(m.reasons)))
    for d in report.domains:
        for key in ("messages", "failing", "spf_fail", "dkim_fail", "dmarc_fail"):
            rows.append(("domain", "", d.domain, key, getattr(d, key)))
    for s in report.suffixes:
        for key in ("messages", "failing", "dmarc_pass", "filed_now"):
            rows.append(("suffix", "", s.suffix, key, getattr(s, key)))
        rows += [("suffix", name, s.suffix, "filed", n) for name, n in s.filed.items()]
    for f in report.forwarded:
        for key in ("messages", "dkim_pass", "arc_pass", "arc_sealer", "list_id", "fix"):
            rows.append(("forwarded", "", f.via, key, getattr(f, key)))
        rows.append(("forwarded", "", f.via, "already_trusted", int(f.already_trusted)))
    for period in report.timeline:
        rows += [("timeline", "", period.label, k, period.counts[k]) for k in TIMELINE_KEYS]
    rows += [("scan", "", "", key, value) for key, value in report.scan.items()]
    return rows


def render_csv(report: Report) -> str:
    """Gives the report as CSV with the columns section, policy, item, key, value."""
    buf = io.StringIO()
    writer = csv.writer(buf, lineterminator="\n")
    writer.writerow(("section", "policy", "item", "key", "value"))
    writer.writerows([csv_cell(c) for c in row] for row in csv_rows(report))
    return buf.getvalue()


# ---------------------------------------------------------------------------- HTML

_COLORS = {
    "pass": "#2e7d32",
    "fail": "#c62828",
    "none": "#9e9e9e",
    "error": "#ef6c00",
    "inbox": "#1565c0",
    "junk": "#f9a825",
    "quarantine": "#6a1b9a",
}
_CSS = (
    "body{font:14px/1.45 system-ui,sans-serif;margin:24px auto;max-width:1100px;color:#222;"
    "padding:0 16px}h1{font-size:22px;margin:0 0 4px}"
    "h2{font-size:17px;margin:28px 0 8px;border-bottom:1px solid #ddd}h3{font-size:15px}"
    ".sub{color:#555;margin:0 0 12px}.charts{display:flex;flex-wrap:wrap;gap:24px}"
    "figure{margin:0;border:1px solid #e3e3e3;border-radius:6px;padding:10px;background:#fcfcfc}"
    "figcaption{font-weight:600;margin-bottom:4px}.legend span{margin-right:12px}"
    ".legend i{display:inline-block;width:10px;height:10px;margin-right:4px;border-radius:2px}"
    "table{border-collapse:collapse;margin:6px 0}th,td{padding:3px 10px;text-align:left;"
    "border-bottom:1px solid #eee;vertical-align:top}td.n{text-align:right;"
    "font-variant-numeric:tabular-nums}tr.fp td{background:#fff4f4}td.nw{white-space:nowrap}"
    ".reasons{color:#555;font-size:12px;margin:0;padding-left:16px}"
    "code{background:#f3f3f3;padding:1px 4px;border-radius:3px}"
    "svg text{font:11px system-ui,sans-serif}"
)
_CSP = "default-src 'none'; style-src 'unsafe-inline'; img-src data:"


def _legend(keys: Sequence[str]) -> str:
    spans = (f'<span><i style="background:{_COLORS[k]}"></i>{k}</span>' for k in keys)
    return '<div class="legend">' + "".join(spans) + "</div>"


def _text(x: float, y: float, text: object, key: str = "", anchor: str = "middle") -> str:
    attr = f' data-k="{escape(key)}"' if key else ""
    return f'<text x="{x:.1f}" y="{y:.1f}" text-anchor="{anchor}"{attr}>{escape(str(text))}</text>'


def _bar(x: float, y: float, w: float, h: float, color: str, title: str) -> str:
    return (
        f'<rect x="{x:.1f}" y="{y:.1f}" width="{w:.1f}" height="{h:.1f}" fill="{color}">'
        f"<title>{escape(title)}</title></rect>"
    )


def _svg(width: float, height: float, label: str, parts: list[str], axis_y: float) -> str:
    axis = f'<line x1="8" y1="{axis_y}" x2="{width - 8}" y2="{axis_y}" stroke="#999"/>'
    return (
        f'<svg xmlns="http://www.w3.org/2000/svg" width="{width:.0f}" height="{height}" '
        f'role="img" aria-label="{escape(label)}">{axis}{"".join(parts)}</svg>'
    )


def timeline_svg(report: Report, width: int = 520, height: int = 240) -> str:
    """Gives stacked bars of the DMARC results per day or month, as inline SVG."""
    left, top, plot_h = 34, 18, height - 58
    periods = report.timeline
    peak = max((sum(p.counts.values()) for p in periods), default=0) or 1
    slot = (width - left - 8) / max(len(periods), 1)
    bar = max(min(slot * 0.7, 36), 1)
    step = max(1, -(-len(periods) // 12))  # at most about 12 labels under the axis
    grid = f'<line x1="{left}" y1="{top}" x2="{width - 8}" y2="{top}" stroke="#ddd"/>'
    parts = [grid, _text(left - 6, top + 4, peak, anchor="end")]
    for i, period in enumerate(periods):
        x, y = left + i * slot + (slot - bar) / 2, float(top + plot_h)
        for key in TIMELINE_KEYS:
            if n := period.counts[key]:
                y -= plot_h * n / peak
                title = f"{period.label}: DMARC {key} {n}"
                parts.append(_bar(x, y, bar, plot_h * n / peak, _COLORS[key], title))
        total = sum(period.counts.values())
        if total and len(periods) <= 40:
            parts.append(_text(x + bar / 2, y - 3, total, f"chart.timeline.{period.label}"))
        if i % step == 0:
            label = period.label[5:] if report.granularity == "day" else period.label
            parts.append(_text(x + bar / 2, top + plot_h + 14, label))
    return _svg(width, height, f"DMARC results per {report.granularity}", parts, top + plot_h)


def policy_svg(report: Report, height: int = 240) -> str:
    """Gives one group of inbox / junk / quarantine bars per policy (and for now), as SVG."""
    groups = [("now", report.now)] + [(p.name, p.counts) for p in report.policies]
    top, plot_h, bar, gap = 18, height - 58, 26, 30
    width = 20 + len(groups) * (3 * bar + gap)
    peak = max((n for _, counts in groups for n in counts.values()), default=0) or 1
    parts = []
    for g, (name, counts) in enumerate(groups):
        x0 = 12 + g * (3 * bar + gap) + gap / 2
        for i, place in enumerate(PLACES):
            n, x = counts.get(place, 0), x0 + i * bar
            h = plot_h * n / peak
            parts.append(
                _bar(x, top + plot_h - h, bar - 3, h, _COLORS[place], f"{name}: {place} {n}")
            )
            parts.append(_text(x + (bar - 3) / 2, top + plot_h - h - 3, n, f"chart.{name}.{place}"))
        parts.append(_text(x0 + 1.5 * bar, top + plot_h + 16, name, f"chart.{name}.label"))
    return _svg(width, height, "inbox, junk and quarantine per policy", parts, top + plot_h)


def _td(value: object, key: str) -> str:
    if isinstance(value, int):
        return f'<td class="n" data-k="{escape(key)}">{value}</td>'
    return '<td class="n">-</td>' if value == "-" else f"<td>{escape(str(value))}</td>"


def _html_table(table: Table) -> str:
    if not table.rows:
        return f'<p id="{table.id}">None.</p>'
    head = "".join(f"<th>{escape(h)}</th>" for h in table.header)
    body = []
    for row in table.rows:
        (first, _), *rest = row
        cells = "".join(_td(v, k) for v, k in rest)
        body.append(f"<tr><th>{escape(str(first))}</th>{cells}</tr>")
    rows = "".join(body)
    return f'<table id="{table.id}"><thead><tr>{head}</tr></thead><tbody>{rows}</tbody></table>'


def _html_moves(p: PolicyOutcome, limit: int) -> str:
    head = (
        f"<h3>{escape(p.name)}: {len(p.moves)} moves, "
        f"{p.likely_false_positives} likely false positives</h3>"
    )
    if not p.moves:
        return head + "<p>None: every message is where this policy would put it.</p>"
    head += f'<p class="note">{escape(LIKELY_FALSE_POSITIVE_MEANS.capitalize())}.</p>'
    rows = []
    for m in p.moves[:limit]:
        reasons = "".join(f"<li>{escape(r)}</li>" for r in m.reasons)
        fp = m.likely_false_positive
        rows.append(
            f'<tr class="{"fp" if fp else "mv"}"><td>{"likely false positive" if fp else ""}</td>'
            f'<td class="nw">{escape(m.date)}</td>'
            f'<td class="nw">{escape(m.folder)} → {escape(m.would)}</td>'
            f"<td>{escape(m.sender)}</td>"
            f'<td>{escape(m.subject)}<ul class="reasons">{reasons}</ul></td></tr>'
        )
    more = len(p.moves) - limit
    return (
        head + "<table><thead><tr><th></th><th>date</th><th>move</th><th>From</th>"
        f"<th>Subject and reasons</th></tr></thead><tbody>{''.join(rows)}</tbody></table>"
        + (f"<p>… and {more} more in --json or --csv.</p>" if more > 0 else "")
    )


def render_html(report: Report, limit: int = 1000) -> str:
    """Gives the report as one self-contained HTML page with inline SVG charts."""
    scan = _scan_line(report)
    none = report.results["spf"]["none"]
    now = ", ".join(f'{p} <b data-k="now.{p}">{report.now[p]}</b>' for p in PLACES)
    out = [
        f'<h1>authsieve report</h1><p class="sub" id="period">{escape(_period(report))}</p>',
        f'<p class="sub" id="scan">{escape(scan)}</p>' if scan else "",
        '<div class="charts"><figure><figcaption>DMARC results per '
        f"{report.granularity}</figcaption>{_legend(TIMELINE_KEYS)}{timeline_svg(report)}</figure>",
        "<figure><figcaption>Where each policy files the mail</figcaption>"
        f"{_legend(PLACES)}{policy_svg(report)}</figure></div>",
    ]
    for table in tables(report):
        out.append(f"<h2>{escape(table.title)}</h2>{_html_table(table)}")
        if table.id == "results":
            out.append(
                f'<p>SPF none rate: <b data-k="results.spf.none_rate">'
                f"{report.spf_none_rate:.1f}%</b> ({none} of {report.messages})</p>"
                f"<p>Where the mail is now: {now}</p>"
            )
        if table.id == "policies":
            out.append("<h2>Moves compared with where the mail is now</h2>")
            out += [_html_moves(p, limit) for p in report.policies]
    return (
        '<!DOCTYPE html>\n<html lang="en"><head><meta charset="utf-8">'
        f'<meta http-equiv="Content-Security-Policy" content="{_CSP}">'
        '<meta name="viewport" content="width=device-width, initial-scale=1">'
        f"<title>authsieve report</title><style>{_CSS}</style></head>\n<body>\n"
        + "\n".join(out)
        + "\n</body></html>\n"
    )
