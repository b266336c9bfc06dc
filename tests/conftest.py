import os
import sys

import pytest

ROOT = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))
sys.path.insert(0, ROOT)


@pytest.fixture(scope="session")
def toy_tokenizer_dir(tmp_path_factory):
    import models
    path = str(tmp_path_factory.mktemp("toy_tok"))
    models.make_toy_tokenizer(path)
    return path
