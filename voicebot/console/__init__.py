"""The operators' web console and the browser softphone."""
