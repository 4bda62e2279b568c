"""The package imports the compiled core, not a pure-Python stand-in."""
import importlib.machinery

import bukt._core as core


def test_compiled_core_is_loaded():
    assert core.__file__.endswith(tuple(importlib.machinery.EXTENSION_SUFFIXES))
