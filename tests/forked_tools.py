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
from typing import List

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
    sys.path[0] = os.path.dirname(os.path.abspath(tool))
    try:
        runpy.run_path(tool, run_name='__main__')
    finally:
        # what the interpreter does on exit (multiprocessing's child ends
        # with os._exit, which skips it)
        atexit._run_exitfuncs()
        sys.stdout.flush()
        sys.stderr.flush()


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
    with tempfile.TemporaryDirectory() as tmp:
        children = []
        for i, env in enumerate(envs):
            out = os.path.join(tmp, f'stdout{i}')
            err = os.path.join(tmp, f'stderr{i}')
            child = _context.Process(
                target=_tool_main,
                args=(str(args[0]), [str(a) for a in args[1:]], env, str(cwd),
                      out, err))
            child.start()
            children.append((child, out, err))
        deadline = time.monotonic() + timeout
        running = [child for child, _, _ in children]
        timed_out = False
        while running:
            left = max(deadline - time.monotonic(), 0)
            if not wait([child.sentinel for child in running], left):
                timed_out = True
                break
            running = [child for child in running if child.is_alive()]
            if any(child.exitcode for child, _, _ in children):
                break
        for child in running:
            child.kill()
            child.join()
        if timed_out:
            raise subprocess.TimeoutExpired(args, timeout)
        codes = [child.exitcode for child, _, _ in children]
        return subprocess.CompletedProcess(
            args, next((code for code in codes if code), 0), ''.join(
                Path(out).read_text(errors='replace')
                for _, out, _ in children), ''.join(
                    Path(err).read_text(errors='replace')
                    for _, _, err in children))
