"""What an order costs."""

from core import cents


def total(*amounts: str) -> int:
    return sum(cents(a) for a in amounts)
