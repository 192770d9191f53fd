"""The `jobtracker` command: migrate, keys, serve, replay and the demo."""
