import unittest

from auth import may_spend


class MaySpendTest(unittest.TestCase):
    def test_limits(self) -> None:
        assert may_spend("user", "49.99")
        assert not may_spend("user", "50.01")
