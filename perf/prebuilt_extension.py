"""The extension compiled on a CPU machine for the GPU image, so that the GPU check spends no device time
building it (100 s of a task's 15 device-minutes on 2026-11-23).

`make gpu-extension` builds effkernels._C, CUDA C++ kernels included, against the GPU image's Python
and torch (perf/build_gpu_extension.sh) and saves it with a stamp: what it was built from and for
(the build's source files, torch's release and CUDA version, the module suffix, the GPU targets).
On the GPU machine `install` puts it in place only where the stamp matches that checkout, that torch
and that GPU, and the library loads with its CUDA kernels; otherwise it says why, and the GPU check
builds there as before.

Usage: python perf/prebuilt_extension.py save FOLDER LIBRARY ARCHS
       python perf/prebuilt_extension.py install FOLDER
"""
import glob
import hashlib
import json
import os
import shutil
import subprocess
import sys
import sysconfig

ROOT = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))
STAMP = "stamp.json"


def sources_digest(root: str = ROOT) -> str:
    """sha256 over the files the build reads (setup.py and csrc/), names and contents, in a fixed order."""
    digest = hashlib.sha256()
    paths = ["setup.py"] + sorted(os.path.relpath(p, root) for p in glob.glob(os.path.join(root, "csrc", "**", "*"),
                                                                                recursive=True) if os.path.isfile(p))
    for path in paths:
        digest.update(path.encode() + b"\0")
        with open(os.path.join(root, path), "rb") as f:
            digest.update(hashlib.sha256(f.read()).digest())
    return digest.hexdigest()


def build_target() -> dict:
    """What a library must have been built for to load and run here (torch imported lazily: the
    build machine's venv provides it)."""
    import torch
    return {"torch": torch.__version__.split("+")[0], "cuda": torch.version.cuda,
            "suffix": sysconfig.get_config_var("EXT_SUFFIX")}


def save(folder: str, library: str, archs: str) -> None:
    """Copy the built library into `folder` with its stamp."""
    os.makedirs(folder, exist_ok=True)
    for old in glob.glob(os.path.join(folder, "_C*")):
        os.remove(old)
    shutil.copy2(library, folder)
    stamp = {"sources": sources_digest(), "archs": archs.replace(";", " ").split(), "library": os.path.basename(library),
             **build_target()}
    with open(os.path.join(folder, STAMP), "w") as f:
        json.dump(stamp, f, indent=1)
    print(f"saved {os.path.basename(library)} ({os.path.getsize(library) / 2**20:.1f} MiB) in {folder}: {stamp}")


def mismatch(stamp: dict) -> str | None:
    """Why a library with this stamp cannot serve this checkout, torch and GPU (None if it can)."""
    import torch
    if stamp.get("sources") != sources_digest():
        return "built from other sources (setup.py or csrc/ changed since `make gpu-extension`)"
    here = build_target()
    for key, value in here.items():
        if stamp.get(key) != value:
            return f"built for {key} {stamp.get(key)}, this machine has {value}"
    arch = "%d.%d" % torch.cuda.get_device_capability()
    if arch not in stamp.get("archs", []):
        return f"built for GPU targets {stamp.get('archs')}, this GPU is {arch}"
    return None


def install(folder: str) -> int:
    """Put the prebuilt library into effkernels/ if it fits here and loads with its CUDA kernels;
    exit status 0 if it did, 1 (with the reason) if the extension must be built here."""
    try:
        with open(os.path.join(folder, STAMP)) as f:
            stamp = json.load(f)
    except (OSError, ValueError) as error:
        print(f"no prebuilt extension: {error}")
        return 1
    reason = mismatch(stamp)
    if reason:
        print(f"prebuilt extension not used: {reason}")
        return 1
    target = os.path.join(ROOT, "effkernels", stamp["library"])
    shutil.copy2(os.path.join(folder, stamp["library"]), target)
    check = subprocess.run([sys.executable, "-c", "import torch, effkernels; "
                            "assert hasattr(torch.ops.effkernels, 'separable_map_cuda'), 'no CUDA C++ kernels'"],
                           cwd=ROOT, capture_output=True, text=True)
    if check.returncode:
        os.remove(target)
        print("prebuilt extension not used: it does not load here:", check.stderr.strip().splitlines()[-1:])
        return 1
    print(f"prebuilt extension in place: {stamp['library']} (torch {stamp['torch']}, CUDA {stamp['cuda']}, "
          f"GPU targets {' '.join(stamp['archs'])})")
    return 0


if __name__ == "__main__":
    command, *args = sys.argv[1:] or [""]
    if command == "save" and len(args) == 3:
        save(*args)
    elif command == "install" and len(args) == 1:
        sys.exit(install(*args))
    else:
        sys.exit(__doc__)
