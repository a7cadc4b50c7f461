"""Helpers the app's code uses."""


def cents_to_text(cents: int) -> str:
    """Format an amount of cents as ``12.34``."""
    return f"{cents // 100}.{cents % 100:02d}"
