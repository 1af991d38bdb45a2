"""One phone call: the session, and the server that wires media transports to sessions."""
