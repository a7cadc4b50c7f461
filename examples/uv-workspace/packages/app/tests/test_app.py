import unittest

from app import checkout


class CheckoutTest(unittest.TestCase):
    def test_checkout(self) -> None:
        self.assertEqual(checkout("user", "20", "20"), "ok")
        self.assertEqual(checkout("user", "40", "20"), "denied")
