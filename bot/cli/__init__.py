"""Command line: running the bot, the terminal chat, and staff operations for scripts."""
