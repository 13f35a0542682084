"""Is a process that this machine started still there? Names a process as
``host:pid:boot:machine`` so that a later command (after a crash) can tell a dead holder on this
host from a live one (same boot: the kernel knows; same machine id, another boot: gone with the
reboot), or from one on another machine (never judged: alive).

>>> import os
>>> gone(process_name(os.getpid()))
False
>>> gone("another-host:1:0000")
False
>>> import socket; gone(f"{socket.gethostname()}:1:another-boot:{machine_id()}") == bool(machine_id())   # rebooted
True
"""

from __future__ import annotations

import os
import socket

__all__ = ["boot_id", "machine_id", "process_name", "gone", "gone_here"]


def boot_id() -> str:
    """This machine's boot id (Linux), so that a host name shared by two machines is not one host."""
    try:
        return open("/proc/sys/kernel/random/boot_id").read().strip()[:8]
    except OSError:
        return "unknown"


def machine_id() -> str:
    """This machine's id (``/etc/machine-id``), which survives a reboot; "" when there is none."""
    try:
        return open("/etc/machine-id").read().strip()[:12]
    except OSError:
        return ""


def process_name(pid: int) -> str:
    """``host:pid:boot:machine`` of the process ``pid`` on this machine."""
    return f"{socket.gethostname()}:{int(pid)}:{boot_id()}:{machine_id()}"


def gone(name: str) -> bool:
    """True only when ``name`` (:func:`process_name`) ran on this machine and its process no
    longer exists: since the last boot and not there now (a child of ours that exited is reaped
    here), or before a reboot of this same machine."""
    host, pid, boot, machine = (str(name).split(":") + ["", "", "", ""])[:4]
    return gone_here(host, pid, boot, machine)


def gone_here(host: str, pid: str, boot: str, machine: str = "") -> bool:
    """:func:`gone` from the parts of a process name."""
    if host != socket.gethostname() or not pid.isdigit():
        return False
    if boot != boot_id():
        return bool(machine) and machine == machine_id()         # rebooted: its processes went with it
    if int(pid) == os.getpid():
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
