import unittest

from billing import total


class TotalTest(unittest.TestCase):
    def test_total(self) -> None:
        assert total("1.50", "2.25") == 375
