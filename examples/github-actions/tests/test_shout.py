import unittest

from shout import shout


class ShoutTest(unittest.TestCase):
    def test_shout(self) -> None:
        assert shout("hi") == "HI!"


if __name__ == "__main__":
    unittest.main()
