"""``python -m llmops_runtime.finetune`` (under ``python -m llmops_runtime.launch -m llmops_runtime.finetune``)."""

import sys

from llmops_runtime.finetune import main

sys.exit(main())
