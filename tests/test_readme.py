"""The README stays short enough to read (the details live in docs/) and every file it links to exists."""

import os
import re

ROOT = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))
README = os.path.join(ROOT, "README.md")


def test_readme_fits_in_twelve_kilobytes():
    assert os.path.getsize(README) <= 12_000


def test_every_link_of_the_readme_exists():
    with open(README, encoding="utf-8") as handle:
        links = re.findall(r"\]\(([^)#]+)\)", handle.read())
    assert any(link.startswith("docs/") for link in links)
    missing = [link for link in links if "://" not in link and not os.path.exists(os.path.join(ROOT, link))]
    assert not missing, f"README links to missing files: {missing}"


def test_every_node_is_in_the_node_reference():
    from longvideo import NODE_CLASS_MAPPINGS

    with open(os.path.join(ROOT, "docs", "nodes.md"), encoding="utf-8") as handle:
        reference = handle.read()
    missing = [name for name in NODE_CLASS_MAPPINGS if f"(`{name}`)" not in reference]
    assert not missing, f"docs/nodes.md has no row for {missing}"
