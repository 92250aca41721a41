"""Fixtures of the training tests: a folder of face crops (see ``training_helpers``)."""

from __future__ import annotations

from pathlib import Path

import pytest
from PIL import Image
from training_helpers import face_images


@pytest.fixture(scope="session")
def faces_dir(tmp_path_factory: pytest.TempPathFactory) -> Path:
    folder = tmp_path_factory.mktemp("faces")
    for i, face in enumerate(face_images()):
        Image.fromarray(face).save(folder / f"face{i}.png")
    return folder
