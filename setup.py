"""Builds genkernels._C (CPU kernels) and, where nvcc is found, genkernels._C_cuda, by driving CMake with ninja.

Environment:
  GENKERNELS_CUDA=1/0       force the CUDA module on (fail without nvcc) or off; default: on when nvcc is found
  CUDACXX, CUDA_HOME        the CUDA toolkit to build with (its nvcc, headers and static runtime), in this
                            order before PATH and /usr/local/cuda: the runtime's major version is the oldest
                            driver the wheel runs on (README, "Building wheels")
  GENKERNELS_CUDA_ARCHS     CMake CUDA architectures, default "80;86;89;90"
  GENKERNELS_CUDA_EMU=1/0   the test-only module genkernels._C_cuemu (CUDA kernels emulated on the CPU);
                            default: on when nvcc (hence the toolkit headers) is found
  GENKERNELS_BUILD_DIR      CMake binary dir (default build/cmake-<python tag>), reused between builds
  GENKERNELS_JOBS           parallel compile jobs
  GENKERNELS_ISAS           CPU instruction sets to build, e.g. "avx2" (default: all of avx512;avx2;base)
  GENKERNELS_SANITIZE       e.g. "address,undefined": _C and _C_cuemu built with -fsanitize= (no _C_cuda) in
                            their own build dir, written to build/sanitize-<tag>/genkernels/ instead of the
                            package, so they never replace the normal modules (scripts/sanitize.sh runs them)
"""
import os
import shutil
import subprocess
import sys
import sysconfig
from pathlib import Path

from setuptools import Extension, setup
from setuptools.command.build_ext import build_ext

ROOT = Path(__file__).resolve().parent


def _find_nvcc():
    home = os.environ.get("CUDA_HOME")
    for cand in (os.environ.get("CUDACXX"), home and os.path.join(home, "bin", "nvcc"), shutil.which("nvcc"),
                 "/usr/local/cuda/bin/nvcc"):
        if cand and Path(cand).exists():
            return cand
    return None


class CMakeExtension(Extension):
    def __init__(self, name):
        super().__init__(name, sources=[])


class CMakeBuild(build_ext):
    def build_extension(self, ext):
        # Both modules come out of one CMake project; build it once, on the first extension.
        if getattr(self, "_cmake_done", False):
            return
        self._cmake_done = True
        import pybind11

        out_dir = Path(self.get_ext_fullpath(ext.name)).resolve().parent
        tag = sysconfig.get_config_var("SOABI") or f"py{sys.version_info[0]}{sys.version_info[1]}"
        build_dir = Path(os.environ.get("GENKERNELS_BUILD_DIR", ROOT / "build" / f"cmake-{tag}"))
        sanitize = _sanitize()
        if sanitize:
            out_dir = ROOT / "build" / f"sanitize-{tag}" / "genkernels"
            build_dir = Path(os.environ.get("GENKERNELS_BUILD_DIR", ROOT / "build" / f"cmake-sanitize-{tag}"))
        build_dir.mkdir(parents=True, exist_ok=True)

        want_cuda = os.environ.get("GENKERNELS_CUDA", "auto").lower()
        nvcc = _find_nvcc()
        if want_cuda in ("1", "on", "true", "yes") and nvcc is None:
            raise RuntimeError("GENKERNELS_CUDA=1 but nvcc was not found (set CUDACXX, CUDA_HOME or PATH)")
        # the sanitizers instrument host code only: no _C_cuda in a sanitizer build
        cuda = want_cuda not in ("0", "off", "false", "no") and nvcc is not None and not sanitize

        cfg = [
            f"-DCMAKE_LIBRARY_OUTPUT_DIRECTORY={out_dir}",
            f"-DPython_EXECUTABLE={sys.executable}",
            f"-Dpybind11_DIR={pybind11.get_cmake_dir()}",
            # RelWithDebInfo: pybind11 does not strip the module (stack traces keep their names)
            f"-DCMAKE_BUILD_TYPE={'RelWithDebInfo' if sanitize else 'Release'}",
            f"-DGENKERNELS_SANITIZE={sanitize}",
            f"-DGENKERNELS_ISAS={os.environ.get('GENKERNELS_ISAS', '')}",
            f"-DGENKERNELS_CUDA={'ON' if cuda else 'OFF'}",
            f"-DGENKERNELS_CUDA_ARCHS={os.environ.get('GENKERNELS_CUDA_ARCHS', '80;86;89;90')}",
        ]
        if nvcc is not None:  # the emulator's headers come from the same toolkit as the CUDA module
            cfg.append(f"-DCUDAToolkit_ROOT={Path(nvcc).resolve().parent.parent}")
        if cuda:
            cfg.append(f"-DCMAKE_CUDA_COMPILER={nvcc}")
        cfg.append(f"-DGENKERNELS_CUDA_EMU={'ON' if _want_emu() else 'OFF'}")
        if sanitize:
            cfg.append("-DCMAKE_INTERPROCEDURAL_OPTIMIZATION=OFF")  # pybind11's LTO: slower, nothing gained
        if shutil.which("ninja") or _pip_ninja():
            cfg += ["-G", "Ninja"]
        subprocess.check_call(["cmake", str(ROOT)] + cfg, cwd=build_dir)
        jobs = os.environ.get("GENKERNELS_JOBS", str(os.cpu_count() or 2))
        subprocess.check_call(["cmake", "--build", ".", "--parallel", jobs], cwd=build_dir)

    def copy_extensions_to_source(self):
        # a sanitizer build is written to its own directory (build_extension), never into the package
        if not _sanitize():
            super().copy_extensions_to_source()


def _sanitize():
    return os.environ.get("GENKERNELS_SANITIZE", "")


def _want_emu():
    want = os.environ.get("GENKERNELS_CUDA_EMU", "auto").lower()
    if want in ("0", "off", "false", "no"):
        return False
    if want in ("1", "on", "true", "yes") and _find_nvcc() is None:
        raise RuntimeError("GENKERNELS_CUDA_EMU=1 but the CUDA toolkit (nvcc) was not found")
    return _find_nvcc() is not None


def _pip_ninja():
    try:
        import ninja  # noqa: F401

        os.environ["PATH"] = ninja.BIN_DIR + os.pathsep + os.environ["PATH"]
        return True
    except Exception:
        return False


exts = [CMakeExtension("genkernels._C")]
if (os.environ.get("GENKERNELS_CUDA", "auto").lower() not in ("0", "off", "false", "no") and _find_nvcc()
        and not _sanitize()):
    exts.append(CMakeExtension("genkernels._C_cuda"))
if _want_emu():
    exts.append(CMakeExtension("genkernels._C_cuemu"))

setup(ext_modules=exts, cmdclass={"build_ext": CMakeBuild})
