"""Where the tests find the repository: its root and the reference arrays in tests/assets."""

import os

ROOT = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))
ASSETS = os.path.join(ROOT, "tests", "assets")
