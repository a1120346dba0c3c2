"""Run ``seginfer`` in this process with a fault injected after the K-th mask (tests/test_faults.py).

    python tests/fault_run.py HOOK K SEGINFER_ARGS...

HOOK, applied once K masks are on disk (in the writer thread that wrote the K-th):
    none      nothing (a plain run, e.g. to be killed with -9)
    sleep     every mask write first sleeps 50 ms (a run that holds its lock for a while)
    enospc    every later mask write raises OSError(ENOSPC), as a full disk does (the injected
              variant, for machines where a small tmpfs cannot be mounted)
    readonly  the output becomes read-only: chmod 0555 (a real EACCES) when not root; as root,
              which chmod does not stop, every later mask write raises OSError(EROFS) (injected:
              a mount cannot be remounted read-only while the run holds files open on it, EBUSY)
    rmtree    the output folder is deleted

K counts the masks on disk in the output folder, so the hook fires the same way in every
process that writes masks. Worker processes of ``--engine processes`` get the hook too:
multiprocessing imports this file in them as ``__mp_main__`` (as it does any main module),
which installs the hook named in the environment variable ``FAULT_RUN_HOOK``.

The exit code is seginfer's.
"""

from __future__ import annotations

import errno
import json
import os
import shutil
import sys
import threading
import time

HOOK_ENV = "FAULT_RUN_HOOK"


def _output(args: list[str]) -> str:
    return args[args.index("--output") + 1]


def _remove(output: str) -> None:
    for _ in range(100):  # other writer threads may add files while it is removed
        shutil.rmtree(output, ignore_errors=True)
        if not os.path.exists(output):
            return
        time.sleep(0.005)
    raise RuntimeError(f"could not remove {output}")


def _masks_on_disk(output: str) -> int:
    try:
        return sum(1 for e in os.scandir(output) if e.name.endswith(".png") and not e.name.startswith("."))
    except FileNotFoundError:
        return 0


def install(hook: str, k: int, output: str) -> None:
    import unsupseg.infer.writers.mask as mask_writer

    real = mask_writer.write_mask
    lock = threading.Lock()
    state = {"done": False}  # this process fired the hook

    def write_mask(path, mask):
        if hook == "sleep":
            time.sleep(0.05)
        with lock:
            after = _masks_on_disk(output) >= k
            fire = after and not state["done"]
            state["done"] = state["done"] or fire
        if fire and hook == "readonly" and os.geteuid() != 0:
            os.chmod(output, 0o555)
        elif fire and hook == "rmtree":
            _remove(output)
        if after and hook == "enospc":
            raise OSError(errno.ENOSPC, os.strerror(errno.ENOSPC))
        if after and hook == "readonly" and os.geteuid() == 0:
            raise OSError(errno.EROFS, os.strerror(errno.EROFS))
        real(path, mask)

    mask_writer.write_mask = write_mask


def main() -> None:
    hook, k, args = sys.argv[1], int(sys.argv[2]), sys.argv[3:]
    if hook != "none":
        os.environ[HOOK_ENV] = json.dumps([hook, k, _output(args)])  # for the worker processes
        install(hook, k, _output(args))
    from unsupseg.infer.cli.seginfer import main as seginfer

    seginfer(args, prog_name="seginfer")


if __name__ == "__main__":
    main()
elif __name__ == "__mp_main__" and HOOK_ENV in os.environ:  # a worker process of this run
    install(*json.loads(os.environ[HOOK_ENV]))
