"""The progress display every job shares: step trail, bar, numbers and a throughput history."""

from __future__ import annotations

from rich.text import Text
from textual.app import ComposeResult
from textual.containers import Vertical
from textual.reactive import reactive
from textual.widget import Widget
from textual.widgets import Static

from app.glyphs import BAR_EMPTY, BAR_FULL, SPARK_ROWS
from bootmedia.progress import Progress, human_bytes, human_duration


class Bar(Widget):
    """A progress bar in full and shaded blocks, which every console font has."""

    DEFAULT_CSS = "Bar { height: 1; }"
    fraction: reactive[float] = reactive(0.0)

    def render(self) -> Text:
        width = max(1, self.size.width - 6)
        filled = round(self.fraction * width)
        return Text.assemble(
            (BAR_FULL * filled, "bold"),
            (BAR_EMPTY * (width - filled), "dim"),
            f" {self.fraction * 100:3.0f}%",
        )


class Sparkline(Widget):
    """Throughput history in whole full-block cells, SPARK_ROWS tall (no eighth or half
    blocks: console fonts lack them)."""

    DEFAULT_CSS = f"Sparkline {{ height: {SPARK_ROWS}; }}"
    values: reactive[tuple[float, ...]] = reactive(())

    def render(self) -> Text:
        width = self.size.width
        data = list(self.values)[-width:]
        peak = max(data, default=0.0) or 1.0
        levels = [max(1, round(v / peak * SPARK_ROWS)) if v > 0 else 0 for v in data]
        rows = [
            "".join(BAR_FULL if level >= row else " " for level in levels).rjust(width)
            for row in range(SPARK_ROWS, 0, -1)
        ]
        return Text("\n".join(rows))


class ProgressView(Vertical):
    """Shows the latest Progress handed to it (attribute down: `progress`)."""

    DEFAULT_CSS = """
    ProgressView { height: auto; }
    ProgressView > #steps { height: auto; max-height: 9; }
    ProgressView > #numbers { height: 2; }
    ProgressView > Sparkline { margin-top: 1; }
    """
    progress: reactive[Progress | None] = reactive(None)

    def __init__(self, *, id: str | None = None, note: str = "") -> None:
        super().__init__(id=id)
        self.history: list[float] = []
        self.note = note  # what the total counts (Job.work_note)

    def compose(self) -> ComposeResult:
        yield Static("Starting...", id="steps")
        yield Bar()
        yield Static("", id="numbers")
        if self.note:
            yield Static(self.note, id="work-note", classes="hint")
        yield Static("Throughput history:", id="history-label")
        yield Sparkline()

    def watch_progress(self, p: Progress | None) -> None:
        if p is None:
            return
        self.query_one("#steps", Static).update(self.steps_text(p))
        self.query_one(Bar).fraction = p.fraction
        done = (
            f"{human_bytes(p.done)} of {human_bytes(p.total)}" if p.total else human_bytes(p.done)
        )
        # A short job ends before the smoothed rate has a value: the average so far instead.
        speed = p.rate or (p.done / p.elapsed if p.done and p.elapsed >= 0.2 else 0.0)
        rate = f"{human_bytes(speed)}/s" if speed else "-"
        self.query_one("#numbers", Static).update(
            f"Done {done}   Speed {rate}\n"
            f"Elapsed {human_duration(p.elapsed)}   Remaining {human_duration(p.eta)}"
        )
        if p.rate:
            self.history.append(p.rate)
            self.query_one(Sparkline).values = tuple(self.history)

    @staticmethod
    def steps_text(p: Progress) -> Text:
        """Finished steps ticked, the current one marked; the last 8 so it fits at 80x25."""
        text = Text()
        trail = list(p.steps)[-8:] or [p.step]
        for step in trail:
            current = step == p.step
            text.append("> " if current else "  ", "bold" if current else "")
            text.append(step + "\n", "bold" if current else "dim")
        if p.message:
            text.append(p.message, "italic")
        return text
