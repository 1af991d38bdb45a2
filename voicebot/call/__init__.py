"""One phone call: the session (session.py) and its parts: listening (listener.py), audio out
(playout.py), the turn policy (policy.py), the decisions that end a call (decisions.py),
bookkeeping (report.py), what they share (context.py); the engines loaded once per process
(runtime.py), and the server that wires media transports to sessions (server.py)."""
