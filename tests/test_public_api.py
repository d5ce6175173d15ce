"""Every public module of microseg declares its public names in ``__all__``.

A public module is one whose dotted name has no part starting with ``_``. Its ``__all__`` names
only things that exist, and every function or class the module itself defines is either listed
there or marked private with a leading ``_``: a reader (and ``from ... import *``) sees exactly
the documented interface.
"""

from __future__ import annotations

import importlib
import inspect
import pkgutil

import pytest

import microseg


def public_modules() -> list[str]:
    """The dotted names of microseg and every public module and package below it."""
    found = [microseg.__name__]
    for info in pkgutil.walk_packages(microseg.__path__, prefix="microseg."):
        if not any(part.startswith("_") for part in info.name.split(".")):
            found.append(info.name)
    return sorted(found)


MODULES = public_modules()


def test_the_walk_finds_modules_of_every_subpackage():
    assert {"microseg.runs", "microseg.io.images", "microseg.inference.ooc",
            "microseg.models.trained", "microseg.recipes.deploy"} <= set(MODULES)
    assert not any(part.startswith("_") for name in MODULES for part in name.split("."))


@pytest.mark.parametrize("name", MODULES)
def test_public_module_declares_existing_names(name):
    module = importlib.import_module(name)
    assert isinstance(getattr(module, "__all__", None), list | tuple), f"{name} has no __all__"
    assert len(set(module.__all__)) == len(module.__all__), f"{name}.__all__ lists a name twice"
    missing = [n for n in module.__all__ if not hasattr(module, n)]
    assert not missing, f"{name}.__all__ names what the module does not have: {missing}"


@pytest.mark.parametrize("name", MODULES)
def test_every_public_definition_is_exported_or_private(name):
    module = importlib.import_module(name)
    defined = [n for n, obj in vars(module).items()
               if (inspect.isfunction(obj) or inspect.isclass(obj))
               and obj.__module__ == name and not n.startswith("_")]
    unlisted = sorted(set(defined) - set(getattr(module, "__all__", ())))
    assert not unlisted, (f"{name} defines {unlisted} without listing them in __all__: add them "
                          f"there or rename them with a leading underscore")
