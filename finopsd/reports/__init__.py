"""Usage over time: the roll-up series (series), their charts (charts) and the /usage page (page)."""
