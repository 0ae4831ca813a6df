"""Run the shell commands of the README and docs/ as written (``make
docs-check``), after ``make demo``.

Every fenced ``bash`` block runs from the repository root with ``bash -eu``
and the interpreter of this script first on ``PATH`` (as in an activated
``.venv``), except lines that run ``make`` (the set-up, done before) and
blocks marked on the line above their fence with
``<!-- docs-check: skip REASON -->`` (COCO, GPUs, placeholders such as
CONFIG, installation). Exit status 1 when any block fails.
"""
import argparse
import os
import os.path as osp
import re
import subprocess
import sys
import time
from pathlib import Path
from typing import List, NamedTuple, Optional

REPO = Path(__file__).resolve().parents[2]
DOCS = ('README.md', 'docs/*.md', 'configs/*/README.md')
_FENCE = re.compile(r'^```(bash|sh|shell)\s*$')
_SKIP = re.compile(r'<!--\s*docs-check:\s*skip\s+(.+?)\s*-->')


class Block(NamedTuple):
    """One fenced shell block: where it is, its text, why it is skipped."""
    file: str
    line: int
    text: str
    skip: Optional[str]

    @property
    def name(self) -> str:
        return f'{self.file}:{self.line}'


def shell_blocks(repo: Path = REPO) -> List[Block]:
    """The fenced shell blocks of the README and docs/, in order."""
    blocks = []
    for pattern in DOCS:
        for path in sorted(repo.glob(pattern)):
            lines = path.read_text(encoding='utf-8').splitlines()
            start = None
            for number, line in enumerate(lines):
                if start is None and _FENCE.match(line):
                    start = number
                elif start is not None and line.startswith('```'):
                    marker = _SKIP.search(lines[start - 1]) if start else None
                    blocks.append(
                        Block(
                            str(path.relative_to(repo)), start + 1,
                            '\n'.join(lines[start + 1:number]),
                            marker.group(1) if marker else None))
                    start = None
    return blocks


def runnable_text(block: Block) -> str:
    """The block without its ``make`` lines."""
    return '\n'.join(line for line in block.text.splitlines()
                     if not line.lstrip().startswith('make '))


def run_block(block: Block, timeout: float) -> subprocess.CompletedProcess:
    env = dict(os.environ)
    env['PATH'] = osp.dirname(sys.executable) + os.pathsep + env['PATH']
    return subprocess.run(
        ['bash', '-euc', runnable_text(block)],
        cwd=REPO,
        env=env,
        capture_output=True,
        text=True,
        timeout=timeout)


def parse_args() -> argparse.Namespace:
    parser = argparse.ArgumentParser(description=__doc__)
    parser.add_argument(
        '--list', action='store_true', help='list the blocks, run nothing')
    parser.add_argument(
        '--only',
        nargs='+',
        metavar='FILE[:LINE]',
        help='run only these blocks (a file, or a file and the fence line)')
    parser.add_argument(
        '--timeout', type=float, default=1800, help='seconds per block')
    return parser.parse_args()


def main(args: argparse.Namespace) -> int:
    if not args.list and not (REPO / 'work_dirs/demo/epoch_20.pth').is_file():
        print('error: run `make demo` first (the docs use its model)')
        return 1
    blocks = shell_blocks()
    if args.only:
        blocks = [
            b for b in blocks if b.file in args.only or b.name in args.only
        ]
    failed = []
    for block in blocks:
        if block.skip or not runnable_text(block).strip():
            print(f'skip {block.name}: {block.skip or "set-up (make) only"}')
            continue
        if args.list:
            print(f'run  {block.name}')
            continue
        start = time.monotonic()
        result = run_block(block, args.timeout)
        seconds = time.monotonic() - start
        status = 'ok' if result.returncode == 0 else 'FAILED'
        print(f'{status:6} {block.name} ({seconds:.0f} s)', flush=True)
        if result.returncode:
            failed.append(block.name)
            print(result.stdout[-2000:] + result.stderr[-3000:])
    if failed:
        print(f'{len(failed)} block(s) failed: {", ".join(failed)}')
    return 1 if failed else 0


if __name__ == '__main__':
    sys.exit(main(parse_args()))
