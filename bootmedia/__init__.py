"""bootmedia: the headless imaging engine and CLI. Never imports Textual."""

__version__ = "0.1.0"
