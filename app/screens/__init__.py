"""One file per screen (or per family of small screens)."""
