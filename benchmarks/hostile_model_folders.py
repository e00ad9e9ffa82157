"""Load every tampered model folder of tests/test_hostile_model.py and say what happened.

    PYTHONPATH=src python benchmarks/hostile_model_folders.py

Each folder is a real scratch-CNN model damaged one way; each load runs under an address-space
limit of 2 GB above the current size, so a size from config.json that would be allocated fails
with MemoryError instead of taking the machine. Outcomes: "clear" (a HeadstartError naming the
damaged file), "refused" (a HeadstartError that does not name it), "crash" (any other
exception: a traceback for a CLI user), "loaded" (accepted).
"""

from __future__ import annotations

import resource
import shutil
import sys
import tempfile
from collections import Counter
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parents[1] / "tests"))

from test_hostile_model import TAMPERED, _good  # noqa: E402

from headstart.errors import HeadstartError  # noqa: E402
from headstart.model.folder import load_model  # noqa: E402


def _vm() -> int:
    for line in Path("/proc/self/status").read_text().splitlines():
        if line.startswith("VmSize:"):
            return int(line.split()[1]) * 1024
    return 0


def outcome(folder: Path, file: str) -> str:
    soft, hard = resource.getrlimit(resource.RLIMIT_AS)
    resource.setrlimit(resource.RLIMIT_AS, (_vm() + 2 * 2 ** 30, hard))
    try:
        load_model(folder)
        return "loaded"
    except HeadstartError as e:
        return "clear" if str(folder / file) in str(e) else "refused"
    except BaseException as e:  # noqa: BLE001 - what a user would have seen as a traceback
        return f"crash ({type(e).__name__})"
    finally:
        resource.setrlimit(resource.RLIMIT_AS, (soft, hard))


def main() -> None:
    root = Path(tempfile.mkdtemp(prefix="hostile-folders-"))
    try:
        good = _good(root / "good")
        results = {}
        for name, (damage, file, _) in TAMPERED.items():
            m = root / "t"
            shutil.rmtree(m, ignore_errors=True)
            shutil.copytree(good, m)
            damage(m)
            results[name] = outcome(m, file)
            print(f"{results[name]:<24} {name}")
        kinds = Counter(r.split(" ")[0] for r in results.values())
        print(f"\n{kinds['clear']} of {len(results)} tampered folders refused with a clear message naming "
              f"the file; {kinds['refused']} refused without naming it; {kinds['crash']} crashed; "
              f"{kinds['loaded']} loaded")
    finally:
        shutil.rmtree(root, ignore_errors=True)


if __name__ == "__main__":
    main()
