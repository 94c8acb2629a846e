"""Import this repository as a package under a fixed name, whatever its folder is called.

ComfyUI imports the repository root as a package, so the pack uses relative imports only. Scripts and
tests outside ComfyUI go through `import_pack()` to get the same package (registered as `longvideo`).
"""

import importlib.util
import os
import sys

PACKAGE_NAME = "longvideo"
ROOT = os.path.dirname(os.path.abspath(__file__))


def import_pack(name: str = PACKAGE_NAME):
    if name in sys.modules:
        return sys.modules[name]
    spec = importlib.util.spec_from_file_location(name, os.path.join(ROOT, "__init__.py"), submodule_search_locations=[ROOT])
    package = importlib.util.module_from_spec(spec)
    sys.modules[name] = package
    try:
        spec.loader.exec_module(package)
    except BaseException:
        del sys.modules[name]
        raise
    return package
