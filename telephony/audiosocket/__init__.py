"""Asterisk's AudioSocket protocol: a pure codec and an asyncio server."""
