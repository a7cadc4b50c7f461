"""The shared base of the example: money in cents."""


def cents(amount: str) -> int:
    units, _, fraction = amount.partition(".")
    return int(units) * 100 + int((fraction + "00")[:2])
