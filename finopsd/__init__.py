"""FinOps gateway: one aiohttp daemon between coding agents and LLM providers."""

__version__ = "0.1.0"
