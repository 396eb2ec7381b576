import sys
from pathlib import Path

import pytest

from unlearn_core.testing import save_tiny, tiny_tokenizer

sys.path.insert(0, str(Path(__file__).parent))  # tests import their helpers: `from tiny import ...`


@pytest.fixture(scope="session")
def tokenizer():
    return tiny_tokenizer()


@pytest.fixture(scope="session")
def tiny_folder(tmp_path_factory) -> Path:
    return save_tiny(tmp_path_factory.mktemp("tiny-llama"))


@pytest.fixture
def text_corpora(tmp_path) -> tuple[str, str]:
    """Two local corpora, code-like and prose-like, large enough for small runs."""
    code = tmp_path / "code.txt"
    prose = tmp_path / "prose.txt"
    code.write_text("".join(f"def f{i}(x):\n    return x * {i} + {i % 7}\n\n" for i in range(3000)))
    prose.write_text("".join(f"Now, fair Hippolyta, our hour number {i} draws on apace.\n"
                             for i in range(3000)))
    return f"text:{code}", f"text:{prose}"
