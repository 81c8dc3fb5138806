"""Griffe extension: docstrings completed at import time are read from the imported object.

``bayesact.kernels._docs.document`` writes the shared ``Args:`` entries into a docstring at its
``{args}`` placeholder when the module is imported. Griffe reads docstrings from the source, where
the placeholder stands; for exactly those objects this extension takes ``inspect.getdoc`` of the
runtime object instead.
"""

from __future__ import annotations

import importlib
import inspect
import re
from typing import Any

from griffe import Class, Docstring, Extension, Function, Object

_PLACEHOLDER = re.compile(r"^\s*\{\w+\}\s*$", re.MULTILINE)


class RuntimeDocstrings(Extension):
    def _complete(self, obj: Object) -> None:
        docstring = obj.docstring
        if docstring is None or not _PLACEHOLDER.search(docstring.value):
            return
        runtime: Any = importlib.import_module(obj.module.path)
        for part in obj.path[len(obj.module.path) + 1 :].split("."):
            runtime = getattr(runtime, part)
        obj.docstring = Docstring(
            inspect.getdoc(runtime) or "",
            lineno=docstring.lineno,
            endlineno=docstring.endlineno,
            parent=obj,
            parser=docstring.parser,
            parser_options=docstring.parser_options,
        )

    def on_function(self, *, func: Function, **kwargs: Any) -> None:
        self._complete(func)

    def on_class(self, *, cls: Class, **kwargs: Any) -> None:
        self._complete(cls)
