"""Publish an existing run folder on the Hugging Face Hub (see `modeling_intrada.publishing.hub.push_run_to_hub`).

    python training/push_to_hub.py --output_dir outputs/intrada-gta5 --hub_model_id <user>/intrada-gta5 \\
        [--private] [--push_discriminators] [--ranking_repo_id <user>/intrada-gta5-ranking] \\
        [--stage intra|inter] [--metrics_file eval-snapshots/metrics.json] [--dry_run]

The model repository gets G_intra (or G_inter with `--stage inter`) with its image processor, modeling code
(`auto_map`) and card; the ranking splits go to a dataset repository. Log in first (`hf auth login`) or pass
`--token`. A failed upload changes nothing local and prints the command that retries what failed.
"""

from __future__ import annotations

import argparse
import sys
from collections.abc import Sequence

from modeling_intrada.errors import run_program
from modeling_intrada.publishing.hub import PushError, push_run_to_hub


def build_parser() -> argparse.ArgumentParser:
    """The command line of this program."""
    parser = argparse.ArgumentParser(
        description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter
    )
    parser.add_argument("--output_dir", required=True, help="the run folder written by run_intrada.py")
    parser.add_argument("--hub_model_id", help="model repository, user/name (required unless --skip_model)")
    parser.add_argument(
        "--ranking_repo_id", help="dataset repository for the ranking splits (default: not pushed)"
    )
    parser.add_argument(
        "--stage", choices=("intra", "inter"), help="which generator (default: intra if saved)"
    )
    parser.add_argument("--private", action="store_true", help="create the repositories private")
    parser.add_argument(
        "--push_discriminators", action="store_true", help="also upload the discriminators (discriminators/)"
    )
    parser.add_argument("--skip_model", action="store_true", help="push only the ranking splits")
    parser.add_argument(
        "--metrics_file",
        action="append",
        default=[],
        help="an evaluate_miou.py metrics.json whose results on this run's models join the card (repeatable)",
    )
    parser.add_argument("--token", help="Hub token (default: the one saved by `hf auth login`)")
    parser.add_argument("--commit_message", default="", help="message of the commits")
    parser.add_argument("--dry_run", action="store_true", help="show what would be uploaded, upload nothing")
    return parser


def main(argv: Sequence[str] | None = None) -> dict[str, str]:
    """Push; print the commit URLs (or the plan of a dry run). Exits with status 1 after a failed upload."""
    args = build_parser().parse_args(argv)
    try:
        pushed = push_run_to_hub(
            args.output_dir,
            args.hub_model_id,
            ranking_repo_id=args.ranking_repo_id,
            stage=args.stage,
            private=args.private,
            push_discriminators=args.push_discriminators,
            push_model=not args.skip_model,
            metrics_files=args.metrics_file,
            token=args.token,
            commit_message=args.commit_message,
            dry_run=args.dry_run,
        )
    except PushError as error:
        print(error, file=sys.stderr)
        raise SystemExit(1) from error
    for what, result in pushed.items():
        print(result if args.dry_run else f"{what}: {result}")
    return pushed


if __name__ == "__main__":
    run_program(main)
