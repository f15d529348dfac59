"""The business rules of the platform: pure functions and frozen values, no I/O."""
