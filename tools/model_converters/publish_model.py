"""Prepare a checkpoint for release: keep the weights and meta (no
optimizer or training state) and add the sha256 prefix to the file name
(mmdet's ``publish_model.py``, loading under ``weights_only``)."""
import argparse

from mmdet_cdetr.cli import report_user_errors
from mmdet_cdetr.converters import publish_checkpoint


def parse_args() -> argparse.Namespace:
    parser = argparse.ArgumentParser(description=__doc__)
    parser.add_argument('in_file', help='input checkpoint filename')
    parser.add_argument(
        'out_file', help='output checkpoint filename (hash appended)')
    parser.add_argument(
        '--save-keys',
        nargs='+',
        default=['meta', 'state_dict'],
        help='checkpoint keys to keep (default: meta state_dict)')
    parser.add_argument(
        '--force',
        action='store_true',
        help='allow out_file to name an existing file (never in_file)')
    return parser.parse_args()


if __name__ == '__main__':
    args = parse_args()
    with report_user_errors(checkpoint=args.in_file):
        print(
            publish_checkpoint(args.in_file, args.out_file, args.save_keys,
                               args.force))
