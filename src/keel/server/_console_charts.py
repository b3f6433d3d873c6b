"""The dashboard's plots as data for an inline SVG template: geometry computed here, text
escaped by the template (``templates/_chart.html``), colours from the stylesheet (classes
``s0`` … ``s5``), and every plot with a title, a description and a data table."""

from __future__ import annotations

from collections.abc import Sequence
from dataclasses import dataclass, field

_W, _H = 640, 240
_LEFT, _RIGHT, _TOP, _BOTTOM = 56, 12, 12, 40
_SERIES = 6
_MAX_BAR = 56


@dataclass(frozen=True, slots=True)
class Mark:
    """A bar (``x, y, w, h``) or a line (``points``) of one series, with its hover text."""

    cls: str
    text: str
    x: float = 0
    y: float = 0
    w: float = 0
    h: float = 0
    points: str = ""


@dataclass(frozen=True, slots=True)
class Tick:
    x: float
    y: float
    text: str


@dataclass(frozen=True, slots=True, kw_only=True)
class Chart:
    """One plot: what the template draws, and the table that says the same in text."""

    id: str
    title: str
    desc: str
    width: int = _W
    height: int = _H
    marks: list[Mark] = field(default_factory=list)
    xticks: list[Tick] = field(default_factory=list)
    yticks: list[Tick] = field(default_factory=list)
    legend: list[tuple[str, str]] = field(default_factory=list)  # (class, series name)
    head: list[str] = field(default_factory=list)
    rows: list[list[str]] = field(default_factory=list)
    empty: bool = False
    bound: float = 1.0  # the value at the top of the y axis


def _fmt(value: float, unit: str) -> str:
    if unit == "%":
        return f"{value * 100:.0f}%"
    if unit == "$":
        return f"${value:.4f}" if value < 1 else f"${value:,.2f}"
    if unit == "s":
        if value == 0:
            return "0"
        return f"{value * 1000:.3g} ms" if value < 1 else f"{value:,.3g} s"
    return f"{value:,.0f}" if value == int(value) else f"{value:,.2f}"


def _scale(top: float) -> tuple[float, list[float]]:
    """A round upper bound for the y axis and its ticks."""
    if top <= 0:
        return 1.0, [0.0, 0.5, 1.0]
    step = 10 ** len(str(int(top))) / 10 if top >= 1 else 0.1
    while top / step > 5:
        step *= 2
    while top / step < 2 and step > 1e-6:
        step /= 2
    ticks = [i * step for i in range(int(top / step) + 2)]
    return ticks[-1], ticks


def _frame(chart_id: str, title: str, unit: str, labels: Sequence[str],
           series: dict[str, list[float]], top: float) -> Chart:
    names = list(series)
    head = ["", *names]
    rows = [[label, *(_fmt(series[n][i], unit) for n in names)]
            for i, label in enumerate(labels)]
    summary = "; ".join(f"{r[0]}: " + ", ".join(f"{n} {v}" for n, v in zip(names, r[1:],
                                                                          strict=True))
                        for r in rows[-7:])
    bound, ticks = (1.0, [0.0, 0.25, 0.5, 0.75, 1.0]) if unit == "%" else _scale(top)
    chart = Chart(id=chart_id, title=title, desc=summary or "no data yet", head=head,
                  rows=rows, empty=not labels, bound=bound,
                  legend=[(f"s{i % _SERIES}", n) for i, n in enumerate(names)])
    plot_h = _H - _TOP - _BOTTOM
    for t in ticks:
        chart.yticks.append(Tick(_LEFT - 6, _TOP + plot_h * (1 - t / bound), _fmt(t, unit)))
    step = (_W - _LEFT - _RIGHT) / max(1, len(labels))
    every = max(1, len(labels) // 8)
    for i, label in enumerate(labels):
        if i % every == 0:
            chart.xticks.append(Tick(_LEFT + step * (i + 0.5), _H - _BOTTOM + 16, label))
    return chart


def _y(value: float, bound: float) -> float:
    plot_h = _H - _TOP - _BOTTOM
    return _TOP + plot_h * (1 - min(value, bound) / bound)


def bar_chart(chart_id: str, title: str, unit: str, labels: Sequence[str],
              series: dict[str, list[float]]) -> Chart:
    """Bars per label, the series stacked (one series: plain bars)."""
    totals = [sum(s[i] for s in series.values()) for i in range(len(labels))]
    chart = _frame(chart_id, title, unit, labels, series, max(totals, default=0))
    bound = chart.bound
    step = (_W - _LEFT - _RIGHT) / max(1, len(labels))
    for i, label in enumerate(labels):
        base = 0.0
        for n, (name, values) in enumerate(series.items()):
            value = values[i]
            if value <= 0:
                continue
            top, bottom = _y(base + value, bound), _y(base, bound)
            width = min(step * 0.7, _MAX_BAR)
            chart.marks.append(Mark(cls=f"s{n % _SERIES}", text=f"{label} · {name}: "
                                    f"{_fmt(value, unit)}",
                                    x=_LEFT + step * (i + 0.5) - width / 2,
                                    y=top, w=width, h=max(0.5, bottom - top)))
            base += value
    return chart


def line_chart(chart_id: str, title: str, unit: str, labels: Sequence[str],
               series: dict[str, list[float]]) -> Chart:
    """One line per series (a point per label)."""
    top = max((v for s in series.values() for v in s), default=0)
    chart = _frame(chart_id, title, unit, labels, series, top)
    bound = chart.bound
    step = (_W - _LEFT - _RIGHT) / max(1, len(labels))
    for n, (name, values) in enumerate(series.items()):
        points = " ".join(f"{_LEFT + step * (i + 0.5):.1f},{_y(v, bound):.1f}"
                          for i, v in enumerate(values))
        chart.marks.append(Mark(cls=f"s{n % _SERIES} line", text=name, points=points))
        for i, v in enumerate(values):
            chart.marks.append(Mark(cls=f"s{n % _SERIES} dot",
                                    text=f"{labels[i]} · {name}: {_fmt(v, unit)}",
                                    x=_LEFT + step * (i + 0.5), y=_y(v, bound), w=3.5))
    return chart
