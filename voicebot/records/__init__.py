"""Call records: what the bot did on each call (text only), in SQLite or PostgreSQL."""
