"""dagrun."""
