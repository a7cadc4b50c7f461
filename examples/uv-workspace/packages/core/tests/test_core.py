import unittest

from core import cents


class CentsTest(unittest.TestCase):
    def test_cents(self) -> None:
        self.assertEqual(cents("1.5"), 150)
        self.assertEqual(cents("2"), 200)
