"""Keep the libraries' own chatter (NNCF's INFO lines, torch's log and warnings) out of the output unless --verbose."""

from __future__ import annotations

import importlib.abc
import importlib.machinery
import logging
import sys
import warnings
from collections.abc import Callable
from types import ModuleType
from typing import Any

#: Library logger -> (the module whose import sets that logger's level, the level edgeleuk sets right after).
#: NNCF sets INFO and adds a stdout handler when imported (seconds into an INT8 export); torch's logging
#: set-up sets WARNING ("No CUDA runtime is found" on a CPU machine). A level set before is overwritten.
QUIET_LOGGERS = {
    "nncf": ("nncf.common.logging.logger", logging.WARNING),
    "torch": ("torch", logging.ERROR),
}

#: Libraries whose Python warnings are chatter unless --verbose (torch's CUDA warning on a CPU machine...).
CHATTY_LIBRARIES = ("torch", "torchvision", "timm", "nncf", "onnxscript")


class _AfterImport(importlib.abc.MetaPathFinder):
    """Runs ``then[name](module)`` right after the module ``name`` is first executed; finds nothing itself."""

    def __init__(self, then: dict[str, Callable[[ModuleType], None]]) -> None:
        self.then = then

    def find_spec(self, fullname: str, path: Any, target: Any = None) -> Any:
        then = self.then.get(fullname)
        if then is None:
            return None
        spec = importlib.machinery.PathFinder.find_spec(fullname, path)
        if spec is None or spec.loader is None or not hasattr(spec.loader, "exec_module"):
            return spec
        run = spec.loader.exec_module

        def exec_module(module: ModuleType) -> None:
            run(module)
            then(module)

        spec.loader.exec_module = exec_module  # type: ignore[method-assign]
        return spec


def _set_level(logger: str, level: int) -> Callable[[ModuleType], None]:
    # The logger only (not nncf.set_log_level, which also re-levels every handler on it, maybe shared ones).
    return lambda _module: logging.getLogger(logger).setLevel(level)


def quiet_libraries() -> None:
    """Without --verbose: NNCF's and torch's loggers and the chatty libraries' warnings stay quiet."""
    for name in CHATTY_LIBRARIES:
        warnings.filterwarnings("ignore", module=rf"{name}(\.|$)")
    later = {}
    for logger, (module, level) in QUIET_LOGGERS.items():
        if module in sys.modules:
            _set_level(logger, level)(sys.modules[module])
        else:
            later[module] = _set_level(logger, level)
    if later and not any(isinstance(f, _AfterImport) for f in sys.meta_path):
        sys.meta_path.insert(0, _AfterImport(later))
