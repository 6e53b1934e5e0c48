import os
import sys
from pathlib import Path

import pytest

sys.path.insert(0, str(Path(__file__).parent))
os.environ.setdefault("TQDM_DISABLE", "1")
os.environ.setdefault("TRANSFORMERS_VERBOSITY", "error")
os.environ["REVREL_EVAL_CACHE"] = "off"  # no test may read another run's cached evaluation (test_evalcache turns it on)

from tiny import build_tiny, register_tiny_task  # noqa: E402

register_tiny_task()


@pytest.fixture(scope="session")
def tiny_dir(tmp_path_factory) -> Path:
    return build_tiny(tmp_path_factory.mktemp("tiny") / "model")


@pytest.fixture()
def tiny(tiny_dir):
    from revrel.models.loading import load_model

    return load_model(str(tiny_dir))
