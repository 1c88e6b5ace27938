"""The domain half: agents, sessions, runs, providers and the session store.

Imports neither `gateway` nor aiohttp's server side.
"""
