"""The aiohttp server: health, webhooks and file links."""
