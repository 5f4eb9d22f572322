"""Sphinx configuration: the pages are Markdown (MyST); the API reference comes from the
docstrings.  Built by tests/test_docs.py with warnings as errors, so a broken reference,
a page missing from the table of contents or a docstring that does not parse fails."""

project = "rsm_shm"
author = "rsm_shm contributors"
extensions = ["myst_parser", "sphinx.ext.autodoc", "sphinx.ext.napoleon"]
source_suffix = {".md": "markdown"}
exclude_patterns = ["_build"]
myst_heading_anchors = 3
autodoc_member_order = "bysource"
autodoc_typehints = "description"
html_theme = "alabaster"
# Names our docstrings mention that autodoc cannot resolve as documented objects.
nitpicky = False
