"""Is a process that this machine started still there? Names a process as ``host:pid:boot`` so
that a later command (after a crash) can tell a dead holder on this host from a live one, or from
one on another machine (never judged: alive).

>>> import os
>>> gone(process_name(os.getpid()))
False
>>> gone("another-host:1:0000")
False
"""

from __future__ import annotations

import os
import socket

__all__ = ["boot_id", "process_name", "gone", "gone_here"]


def boot_id() -> str:
    """This machine's boot id (Linux), so that a host name shared by two machines is not one host."""
    try:
        return open("/proc/sys/kernel/random/boot_id").read().strip()[:8]
    except OSError:
        return "unknown"


def process_name(pid: int) -> str:
    """``host:pid:boot`` of the process ``pid`` on this machine."""
    return f"{socket.gethostname()}:{int(pid)}:{boot_id()}"


def gone(name: str) -> bool:
    """True only when ``name`` (:func:`process_name`) ran on this machine since its last boot and
    its process no longer exists (a child of ours that exited is reaped here)."""
    host, pid, boot = (str(name).split(":") + ["", "", ""])[:3]
    return gone_here(host, pid, boot)


def gone_here(host: str, pid: str, boot: str) -> bool:
    """:func:`gone` from the parts of a process name."""
    if host != socket.gethostname() or boot != boot_id() or not pid.isdigit() or int(pid) == os.getpid():
        return False
    try:
        done, _ = os.waitpid(int(pid), os.WNOHANG)      # a child of ours: reap it if it exited
        return done != 0
    except ChildProcessError:                            # not our child: ask the kernel
        pass
    try:
        os.kill(int(pid), 0)
    except ProcessLookupError:
        return True
    except OSError:          # e.g. another user's process: alive
        return False
    return False
