"""Convert a checkpoint of the official Conditional DETR repository
(Atten4Vis/ConditionalDETR: R50, R101, DC5-R50, DC5-R101, and its GroupDETR
branch) for our model.

The 91 logits indexed by COCO category id become mmdet's 80 labels. DC5
checkpoints convert like plain ones; evaluate them with the DC5 config.
GroupDETR checkpoints keep all their query groups with --config of a group
config (configs/group_detr/), and only group 0 for a plain config.
"""
from mmdet_cdetr.cli import report_user_errors
from mmdet_cdetr.converters import (convert_and_save, convert_official,
                                    converter_parser, load_official,
                                    official_depth, zoo_config)


def main() -> None:
    args = converter_parser(
        __doc__, 'official checkpoint (a dict with "model"), e.g. '
        'ConditionalDETR_r50_epoch50.pth').parse_args()
    with report_user_errors(checkpoint=args.src):
        state_dict = load_official(args.src)
        config = args.config or zoo_config(official_depth(state_dict))
        convert_and_save(
            convert_official(state_dict, config),
            args,
            config,
            source_kind='official')


if __name__ == '__main__':
    main()
