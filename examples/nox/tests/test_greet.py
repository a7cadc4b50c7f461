import unittest

from greet import greet


class GreetTest(unittest.TestCase):
    def test_greet(self) -> None:
        assert greet("nox") == "Hello, nox!"


if __name__ == "__main__":
    unittest.main()
