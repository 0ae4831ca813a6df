"""A run resumed from a checkpoint repeats the uninterrupted run exactly:
same logged losses, bit-identical weights (CPU, same processes/workers)."""
import re
import shutil

import torch
from conftest import run_tool, write_config

from mmdet_cdetr.utils.torch_compat import load_weights_only


def _epoch_losses(work_dir, epoch: int) -> list:
    log = ''.join(p.read_text() for p in sorted(work_dir.glob('*/*.log')))
    return re.findall(
        rf'Epoch\(train\) +\[{epoch}\]\[ *(\d+)/\d+\].*? loss: '
        r'([0-9.]+)', log)


def test_resume_from_epoch_2_repeats_the_3_epoch_run(synthetic_root, tmp_path):
    # One persistent worker with random flips, dropout everywhere and a
    # validation between the save of epoch 2 and epoch 3: each would break
    # exactness on its own.
    config = write_config(
        tmp_path / 'cfg.py',
        synthetic_root,
        train_dataloader='dict(batch_size=8, num_workers=1, '
        'persistent_workers=True, dataset=dict(data_root=data_root))',
        train_cfg='dict(max_epochs=3, val_interval=2)',
        randomness='dict(seed=0)',
    )
    whole, resumed = tmp_path / 'whole', tmp_path / 'resumed'
    result = run_tool(['tools/train.py', config, '--work-dir', str(whole)])
    assert result.returncode == 0, result.stderr[-3000:]
    resumed.mkdir()
    shutil.copy(whole / 'epoch_2.pth', resumed / 'epoch_2.pth')
    result = run_tool([
        'tools/train.py', config, '--work-dir',
        str(resumed), '--resume',
        str(resumed / 'epoch_2.pth')
    ])
    assert result.returncode == 0, result.stderr[-3000:]

    losses = _epoch_losses(resumed, 3)
    assert len(losses) == 4 and _epoch_losses(whole, 3) == losses
    assert _epoch_losses(resumed, 2) == []  # it did not train epoch 2 again
    final = [load_weights_only(d / 'epoch_3.pth') for d in (whole, resumed)]
    before = load_weights_only(whole / 'epoch_2.pth')['state_dict']
    for key, value in final[0]['state_dict'].items():
        assert torch.equal(value, final[1]['state_dict'][key]), key
    assert not torch.equal(before['query_embedding.weight'],
                           final[0]['state_dict']['query_embedding.weight'])
    assert len(final[0]['random_states']) == 1  # one process
