"""Stage 2 on its own: rank the target training images with G_inter and write the ranking splits.

    accelerate launch training/rank_by_entropy.py --inter_model outputs/run/inter/model \
        --target_dataset data/cityscapes --target_config default --target_split train --target_size 512 1024 \
        --label_space cityscapes --lambda_easy 0.67 [--normalize_entropy true] --output_dir outputs/run \
        [--push_to_hub --hub_model_id user/intrada-gta5]      # the splits go to user/intrada-gta5-ranking

The same options as `run_intrada.py` (`--config FILE.yaml` included), with `--stage rank`: the splits are
written to `<output_dir>/ranking/` (Parquet + card + ranking.json + ranking.png), which stage 3 reads
(`run_intrada.py --stage intra`, or `--ranking FOLDER_OR_HUB_ID`). The math lives in
`modeling_intrada/ranking.py`; see docs/training.md.
"""

from __future__ import annotations

import sys
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parent))

import run_intrada

if __name__ == "__main__":
    arguments = sys.argv[1:]
    if "--stage" in arguments:
        raise SystemExit("rank_by_entropy.py always runs --stage rank; use run_intrada.py for other stages")
    run_intrada.main([*arguments, "--stage", "rank"])
