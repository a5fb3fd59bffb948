"""Hostile-input, load and fault tests against live ferrosmtp servers (issue 5)."""
