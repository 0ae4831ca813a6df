"""The docs' shell commands (run by ``make docs-check``) name scripts,
configs and flags that exist: a fast check of what the full run executes."""
import re
import runpy

from conftest import REPO

docs_check = runpy.run_path(str(REPO / 'tools/misc/docs_check.py'))
# Our own command lines and the flags every one of them may take from the
# shared helpers in mmdet_cdetr/cli/.
_TOOL_CALL = re.compile(r'(?:python|\.venv/bin/python)\s+(tools/\S+\.py)(.*)')
_SHARED = ''.join(path.read_text()
                  for path in (REPO / 'mmdet_cdetr/cli').glob('*.py'))


def _commands(text: str) -> list:
    """The block's commands with continuation lines joined."""
    return text.replace('\\\n', ' ').splitlines()


def test_every_block_runs_or_says_why_not():
    blocks = docs_check['shell_blocks']()
    assert len(blocks) > 20
    runnable = [b for b in blocks if not b.skip]
    assert len(runnable) >= 10
    for block in blocks:
        if block.skip:
            assert len(block.skip) > 5, block.name


def test_runnable_blocks_name_existing_scripts_configs_and_flags():
    for block in docs_check['shell_blocks']():
        if block.skip:
            continue
        text = docs_check['runnable_text'](block)
        for path in re.findall(r'\b((?:tools|configs)/[\w/.-]+\.(?:py|sh))',
                               text):
            assert (REPO / path).is_file(), f'{block.name}: {path}'
        for command in _commands(text):
            call = _TOOL_CALL.search(command)
            if call is None:
                continue
            script, rest = call.groups()
            source = (REPO / script).read_text() + _SHARED
            for flag in re.findall(r'(?<![\w-])(--[a-z][\w-]*)', rest):
                assert f"'{flag}'" in source, f'{block.name}: {script} {flag}'
