import unittest

from auth import may_spend


class MaySpendTest(unittest.TestCase):
    def test_limits(self) -> None:
        self.assertTrue(may_spend("user", "49.99"))
        self.assertFalse(may_spend("user", "50.01"))
