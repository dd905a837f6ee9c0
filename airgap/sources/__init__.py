"""Ways of fetching bytes from the outside world; each returns files checked against a digest."""
