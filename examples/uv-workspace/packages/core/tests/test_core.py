import unittest

from core import cents


class CentsTest(unittest.TestCase):
    def test_cents(self) -> None:
        assert cents("1.5") == 150
        assert cents("2") == 200
