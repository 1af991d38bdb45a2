"""Asterisk's chan_websocket media protocol: a pure codec and a WebSocket server."""
