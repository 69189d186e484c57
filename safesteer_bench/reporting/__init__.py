"""Reporting: composite scores and dominance, the HTML report and its plots, the leaderboard and
the CI regression gate (docs/architecture.md §7)."""
