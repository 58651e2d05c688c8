"""The README states the tolerance table; it must say what the matrix uses."""

import pathlib
import re

from reports.matrix import TOLERANCES

README = (pathlib.Path(__file__).parents[1] / "README.md").read_text()


def test_readme_tolerance_table_matches_the_matrix():
    stated = {m[0]: (float(m[1]), float(m[2]))
              for m in re.findall(r"^\| (float\w+|bfloat\w+) \| ([\d.e+-]+) \| ([\d.e+-]+) \|$", README, re.M)}
    assert stated == TOLERANCES


def test_readme_opens_with_the_two_commands():
    head = "\n".join(README.splitlines()[:6])
    assert "make report" in head and "make test" in head
