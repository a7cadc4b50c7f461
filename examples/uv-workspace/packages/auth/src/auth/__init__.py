"""Who may spend how much."""

from core import cents


def may_spend(role: str, amount: str) -> bool:
    limit = {"admin": "1000", "user": "50"}.get(role, "0")
    return cents(amount) <= cents(limit)
