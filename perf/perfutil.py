"""Helpers the perf/ scripts share: a free loopback port, a process's CPU seconds, memory
and open files from /proc, a directory's disk usage, and kcat run with the system's
librdkafka (never a test build's)."""

import os
import socket
import subprocess
import sys


def free_port():
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


def cpu_seconds(pid):
    """utime + stime of `pid`, in seconds."""
    with open(f"/proc/{pid}/stat") as f:
        fields = f.read().rsplit(")", 1)[1].split()
    return (int(fields[11]) + int(fields[12])) / os.sysconf("SC_CLK_TCK")


def proc_status(pid):
    """VmRSS, RssAnon, RssFile, RssShmem, VmHWM (bytes) and Threads from /proc/PID/status."""
    out = {}
    with open(f"/proc/{pid}/status") as f:
        for line in f:
            k, _, v = line.partition(":")
            if k in ("VmRSS", "RssAnon", "RssFile", "RssShmem", "VmHWM"):
                out[k] = int(v.split()[0]) * 1024
            elif k == "Threads":
                out[k] = int(v)
    return out


def open_files(pid):
    return len(os.listdir(f"/proc/{pid}/fd"))


def disk_usage(path):
    """(allocated bytes, apparent bytes, files) under `path`."""
    alloc = apparent = files = 0
    for dirpath, _, names in os.walk(path):
        for n in names:
            try:
                st = os.lstat(os.path.join(dirpath, n))
            except FileNotFoundError:
                continue
            alloc += st.st_blocks * 512
            apparent += st.st_size
            files += 1
    return alloc, apparent, files


def kcat(args, stdin=None, timeout=900):
    """kcat's stdout; exits the script with kcat's error when it fails."""
    env = dict(os.environ)
    env.pop("LD_LIBRARY_PATH", None)
    r = subprocess.run(["kcat"] + args, stdin=stdin, stdout=subprocess.PIPE,
                       stderr=subprocess.PIPE, env=env, timeout=timeout)
    if r.returncode != 0:
        sys.exit(f"kcat {' '.join(args)}: {r.stderr.decode()}")
    return r.stdout
