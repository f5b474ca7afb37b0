"""Getting outbox rows to the platforms: the dispatcher and its pacing."""
