"""Option widgets drawn in plain ASCII ("[x]", "(*)"), which every console font has and which
read the same in 16 colours as in 16 million."""

from __future__ import annotations

from typing import ClassVar

from rich.text import Text
from textual.binding import Binding, BindingType
from textual.reactive import reactive
from textual.widget import Widget


class Toggle(Widget, can_focus=True):
    """[x] label. Space toggles."""

    DEFAULT_CSS = """
    Toggle { height: 1; width: 1fr; }
    Toggle:focus { background: $accent 30%; text-style: bold; }
    """
    BINDINGS: ClassVar[list[BindingType]] = [
        Binding("space", "flip", "Toggle", key_display="Space")
    ]
    value: reactive[bool] = reactive(False)

    def __init__(self, label: str, value: bool = False, *, id: str | None = None) -> None:
        super().__init__(id=id)
        self.label = label
        self.set_reactive(Toggle.value, value)

    def render(self) -> Text:
        return Text(f"[{'x' if self.value else ' '}] {self.label}")

    def action_flip(self) -> None:
        self.value = not self.value


class Choice(Widget, can_focus=True):
    """(*) one  ( ) two  ( ) three. Left/right (or space) moves the choice."""

    DEFAULT_CSS = """
    Choice { height: 1; width: 1fr; }
    Choice:focus { background: $accent 30%; text-style: bold; }
    """
    BINDINGS: ClassVar[list[BindingType]] = [
        Binding("left", "move(-1)", "Change", key_display="<-"),
        Binding("right", "move(1)", "Change", show=False),
        Binding("space", "move(1)", "Change", show=False),
    ]
    index: reactive[int] = reactive(0)

    def __init__(
        self, options: list[tuple[str, str]], value: str, *, id: str | None = None
    ) -> None:
        super().__init__(id=id)
        self.options = options  # (value, label)
        values = [v for v, _ in options]
        self.set_reactive(Choice.index, values.index(value) if value in values else 0)

    @property
    def value(self) -> str:
        return self.options[self.index][0]

    def render(self) -> Text:
        return Text(
            "  ".join(
                f"({'*' if i == self.index else ' '}) {label}"
                for i, (_, label) in enumerate(self.options)
            )
        )

    def action_move(self, step: int) -> None:
        self.index = (self.index + step) % len(self.options)
