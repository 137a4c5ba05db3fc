"""Master daemon (a later issue)."""
