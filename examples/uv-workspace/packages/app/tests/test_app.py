import unittest

from app import checkout


class CheckoutTest(unittest.TestCase):
    def test_checkout(self) -> None:
        assert checkout("user", "20", "20") == "ok"
        assert checkout("user", "40", "20") == "denied"
