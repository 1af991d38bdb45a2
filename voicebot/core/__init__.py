"""The ground floor: audio frames, the small interfaces, events, errors, settings, logs."""
