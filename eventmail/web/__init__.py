"""The web side: aiohttp sub-applications for the account and admin pages and the Mox-compatible webapi."""
