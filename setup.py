"""Builds arrowloader._C from csrc/ with CMake (pybind11); the package lives in python/."""

import os
import subprocess
import sys
from pathlib import Path

from setuptools import Extension, setup
from setuptools.command.build_ext import build_ext

ROOT = Path(__file__).resolve().parent


class CMakeExtension(Extension):
    """An extension whose sources CMake, not setuptools, compiles."""

    def __init__(self, name: str) -> None:
        super().__init__(name, sources=[])


class CMakeBuild(build_ext):
    """Configures and builds CMakeLists.txt into the extension's output folder."""

    def build_extension(self, ext: Extension) -> None:
        import pybind11

        output = Path(self.get_ext_fullpath(ext.name)).resolve().parent
        build_temp = Path(self.build_temp) / ext.name
        build_temp.mkdir(parents=True, exist_ok=True)
        config = os.environ.get("ARROWLOADER_BUILD_TYPE", "Debug" if self.debug else "Release")
        args = [
            f"-DCMAKE_LIBRARY_OUTPUT_DIRECTORY={output}",
            f"-DPython_EXECUTABLE={sys.executable}",
            f"-Dpybind11_DIR={pybind11.get_cmake_dir()}",
            f"-DCMAKE_BUILD_TYPE={config}",
        ]
        # ARROWLOADER_SANITIZE=address (ASan + UBSan) or thread (TSan): see CMakeLists.txt.
        sanitize = os.environ.get("ARROWLOADER_SANITIZE", "")
        args.append(f"-DARROWLOADER_SANITIZE={sanitize}")
        args += os.environ.get("ARROWLOADER_CMAKE_ARGS", "").split()
        try:
            import ninja  # noqa: F401

            args.append("-GNinja")
        except ImportError:
            pass
        subprocess.run(["cmake", str(ROOT), *args], cwd=build_temp, check=True)
        jobs = f"-j{os.cpu_count() or 1}"
        subprocess.run(["cmake", "--build", ".", jobs], cwd=build_temp, check=True)


setup(
    ext_modules=[CMakeExtension("arrowloader._C")],
    cmdclass={"build_ext": CMakeBuild},
)
