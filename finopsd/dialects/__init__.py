"""Inbound dialects other than OpenAI chat, translated to and from the canonical chat form."""
