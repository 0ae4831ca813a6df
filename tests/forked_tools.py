"""Run ``tools/*.py`` in a fresh process each time without paying the
imports each time.

A command-line tool spends about 12 s of CPU importing torch, mmcv, mmdet
and this package before it does anything, and the suite starts tools about a
hundred times. Here a multiprocessing fork server imports them once (and
runs nothing else, so no torch thread pool exists when it forks); each tool
then runs in a child forked from it: a process of its own, as with
``python tools/x.py``, with its own environment, working directory,
``sys.argv``, stdout, stderr and exit status.
"""
import atexit
import multiprocessing
import os
import runpy
import subprocess
import sys
import tempfile
import time
from multiprocessing.connection import wait
from pathlib import Path
from typing import List, Optional, Tuple

#: What every tool imports: loaded once in the fork server.
PRELOAD = [
    'torch', 'mmengine.runner', 'mmdet.apis', 'mmdet.models', 'mmdet.engine',
    'mmdet.evaluation', 'mmdet.visualization', 'mmdet_cdetr', 'mmdet_cdetr.cli'
]

_context = multiprocessing.get_context('forkserver')
_context.set_forkserver_preload(PRELOAD)


def _tool_main(tool: str, argv: List[str], env: dict, cwd: str, out: str,
               err: str) -> None:
    """The child: what ``python tool *argv`` does, in ``cwd`` with ``env``;
    stdout and stderr go to the files ``out`` and ``err``."""
    os.chdir(cwd)
    os.environ.clear()
    os.environ.update(env)
    for fd, path in ((1, out), (2, err)):
        with open(path, 'w') as file:
            os.dup2(file.fileno(), fd)
    threads = env.get('OMP_NUM_THREADS')
    if threads:
        import torch
        torch.set_num_threads(int(threads))
    sys.argv = [tool, *argv]
    # as a fresh interpreter: the tool's folder, then PYTHONPATH's entries
    sys.path[0] = os.path.dirname(os.path.abspath(tool))
    sys.path[1:1] = [
        p for p in env.get('PYTHONPATH', '').split(os.pathsep) if p
    ]
    try:
        runpy.run_path(tool, run_name='__main__')
    finally:
        # what the interpreter does on exit (multiprocessing's child ends
        # with os._exit, which skips it)
        atexit._run_exitfuncs()
        sys.stdout.flush()
        sys.stderr.flush()


class ForkedTool:
    """``python *args`` (``args[0]`` a Python tool) running in a child of
    the fork server, its stdout and stderr captured in files."""

    def __init__(self, args: List[str], cwd: Path, env: dict) -> None:
        self._outputs = tempfile.TemporaryDirectory()
        self._out = os.path.join(self._outputs.name, 'stdout')
        self._err = os.path.join(self._outputs.name, 'stderr')
        self.args = args
        self.process = _context.Process(
            target=_tool_main,
            args=(str(args[0]), [str(a) for a in args[1:]], env, str(cwd),
                  self._out, self._err))
        self.process.start()

    def poll(self) -> Optional[int]:
        """The exit status (minus the signal that ended it), or None."""
        return self.process.exitcode

    def send_signal(self, sig: int) -> None:
        os.kill(self.process.pid, sig)

    def kill(self) -> None:
        self.process.kill()
        self.process.join()

    def wait(self, timeout: float) -> int:
        """The exit status; the child is killed after ``timeout`` s."""
        self.process.join(timeout)
        if self.process.exitcode is None:
            self.kill()
            raise subprocess.TimeoutExpired(self.args, timeout)
        return self.process.exitcode

    def outputs(self) -> Tuple[str, str]:
        """What the child wrote to stdout and stderr."""
        return tuple(
            Path(path).read_text(errors='replace')
            for path in (self._out, self._err))

    def communicate(self, timeout: float) -> Tuple[str, str]:
        """As :meth:`subprocess.Popen.communicate`: wait, then outputs."""
        self.wait(timeout)
        return self.outputs()


def run_forked(args: List[str], cwd: Path, env: dict,
               timeout: int) -> subprocess.CompletedProcess:
    """``python *args`` (``args[0]`` a Python tool) in a child of the fork
    server, as :func:`subprocess.run` with ``capture_output=True,
    text=True`` returns it."""
    return _run_children(args, [env], cwd, timeout)


def run_forked_distributed(args: List[str], nprocs: int, port: int, cwd: Path,
                           env: dict,
                           timeout: int) -> subprocess.CompletedProcess:
    """``torchrun --nproc_per_node=nprocs --master_port=port *args
    --launcher pytorch`` on this machine, its processes forked from the
    fork server: each rank gets torchrun's environment, and when one rank
    fails the others are ended, as torchrun does. stdout and stderr are the
    ranks' in rank order; the exit status is the first failed rank's."""
    rank_envs = []
    for rank in range(nprocs):
        rank_env = dict(
            env,
            RANK=str(rank),
            LOCAL_RANK=str(rank),
            WORLD_SIZE=str(nprocs),
            LOCAL_WORLD_SIZE=str(nprocs),
            MASTER_ADDR='127.0.0.1',
            MASTER_PORT=str(port))
        rank_env.setdefault('OMP_NUM_THREADS', '1')
        rank_envs.append(rank_env)
    return _run_children([*args, '--launcher', 'pytorch'], rank_envs, cwd,
                         timeout)


def _run_children(args: List[str], envs: List[dict], cwd: Path,
                  timeout: int) -> subprocess.CompletedProcess:
    """``python *args`` in one forked child per environment of ``envs``,
    until all end, one fails (the others are then killed) or ``timeout``
    passes; their outputs joined in order, the first failure's status."""
    children = [ForkedTool(args, cwd, env) for env in envs]
    deadline = time.monotonic() + timeout
    running = list(children)
    timed_out = False
    while running:
        left = max(deadline - time.monotonic(), 0)
        if not wait([child.process.sentinel for child in running], left):
            timed_out = True
            break
        running = [child for child in running if child.poll() is None]
        if any(child.poll() for child in children):
            break
    for child in running:
        child.kill()
    if timed_out:
        raise subprocess.TimeoutExpired(args, timeout)
    codes = [child.poll() for child in children]
    outputs = [child.outputs() for child in children]
    return subprocess.CompletedProcess(
        args, next((code for code in codes if code), 0),
        ''.join(out for out, _ in outputs), ''.join(err for _, err in outputs))
