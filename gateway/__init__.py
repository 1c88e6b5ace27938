"""clawgate: an OpenClaw-compatible gateway on one aiohttp port."""

__version__ = "0.1.0"
