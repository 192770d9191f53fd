"""The HTTP server: the aiohttp app, one module per resource family, and `serve`."""
