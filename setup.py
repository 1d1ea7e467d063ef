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
        # ARROWLOADER_SANITIZE=address (ASan + UBSan) or thread (TSan): see CMakeLists.txt.
        # Each kind of build keeps its own CMake folder, so switching between them never
        # mixes object files compiled with and without a sanitizer.
        sanitize = os.environ.get("ARROWLOADER_SANITIZE", "")
        build_temp = Path(self.build_temp) / (f"{ext.name}-{sanitize}" if sanitize else ext.name)
        build_temp.mkdir(parents=True, exist_ok=True)
        config = os.environ.get("ARROWLOADER_BUILD_TYPE", "Debug" if self.debug else "Release")
        args = [
            f"-DCMAKE_LIBRARY_OUTPUT_DIRECTORY={output}",
            f"-DPython_EXECUTABLE={sys.executable}",
            f"-Dpybind11_DIR={pybind11.get_cmake_dir()}",
            f"-DCMAKE_BUILD_TYPE={config}",
        ]
        args.append(f"-DARROWLOADER_SANITIZE={sanitize}")
        # The test hooks (ThreadPool.submit_sleep) only where the tests ask for them.
        hooks = os.environ.get("ARROWLOADER_TEST_HOOKS", "") == "1"
        args.append(f"-DARROWLOADER_TEST_HOOKS={'ON' if hooks else 'OFF'}")
        # pyproject.toml's version, the one the package reports, becomes _C.__version__.
        args.append(f"-DARROWLOADER_VERSION={self.distribution.get_version()}")
        args += os.environ.get("ARROWLOADER_CMAKE_ARGS", "").split()
        try:
            import ninja

            # The ninja of this build's environment: pip's isolated build environments
            # are temporary, and one cached by an earlier build may be gone.
            args += ["-GNinja", f"-DCMAKE_MAKE_PROGRAM={Path(ninja.BIN_DIR) / 'ninja'}"]
        except ImportError:
            pass
        subprocess.run(["cmake", str(ROOT), *args], cwd=build_temp, check=True)
        jobs = f"-j{os.cpu_count() or 1}"
        subprocess.run(["cmake", "--build", ".", jobs], cwd=build_temp, check=True)


setup(
    ext_modules=[CMakeExtension("arrowloader._C")],
    cmdclass={"build_ext": CMakeBuild},
)
