"""The Textual UI of bootmedia: a client of the headless engine in `bootmedia/`.

Attributes go down (screens hand widgets what to show), messages go up (widgets and workers
post messages, screens decide). All disk and engine work runs in thread workers.
"""
