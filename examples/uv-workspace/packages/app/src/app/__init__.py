"""The application: checks a basket against a role's limit."""

from auth import may_spend
from billing import total


def checkout(role: str, *amounts: str) -> str:
    cost = total(*amounts)
    return "ok" if may_spend(role, f"{cost // 100}.{cost % 100:02d}") else "denied"
