"""Widgets show what their screen hands them and post messages; they never call the engine."""
