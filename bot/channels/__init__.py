"""Channel adapters: one module per platform behind the small `Channel` interface."""
