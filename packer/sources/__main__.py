"""python -m packer.sources DATASET RAW_DIR -o data_manifest.jsonl"""

import sys

from .cli import main

sys.exit(main())
