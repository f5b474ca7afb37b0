"""Channel adapters: one module per platform behind the small `Channel` interface."""

import os

# python-telegram-bot 22 reports `retry_after` as a timedelta when asked to, as its next
# major version will always do; the adapter handles both, so opt in and skip the warning.
os.environ.setdefault("PTB_TIMEDELTA", "true")
