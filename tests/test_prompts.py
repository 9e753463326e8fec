"""Prompt validation: each invalid prompt gives a PromptError a person understands."""

import numpy as np
import pytest

from sam_engine.errors import PromptError
from sam_engine.prompts import Prompts, validate_prompts

SIZE = (100, 200)  # H, W


def test_valid_points_and_boxes_are_normalised():
    p = validate_prompts(
        Prompts(points=[[10, 20], [199, 99]], labels=[1, 0], boxes=[[0, 0, 200, 100]]), SIZE
    )
    assert p.points.dtype == np.float32 and p.points.shape == (2, 2)
    assert p.labels.tolist() == [1, 0]
    assert p.boxes.shape == (1, 4) and p.boxes.dtype == np.float32


def test_single_box_as_flat_list_is_accepted():
    p = validate_prompts(Prompts(boxes=[1, 2, 30, 40]), SIZE)
    assert p.boxes.shape == (1, 4)


@pytest.mark.parametrize(
    "prompts, words",
    [
        (Prompts(), "empty prompt"),
        (Prompts(points=np.zeros((0, 2)), labels=np.zeros(0)), "empty prompt"),
        (Prompts(points=[[np.nan, 3]], labels=[1]), "NaN"),
        (Prompts(points=[[250, 3]], labels=[1]), "outside the 200x100 image"),
        (Prompts(points=[[-1, 3]], labels=[1]), "outside"),
        (Prompts(points=[[1, 3]]), "need labels"),
        (Prompts(points=[[1, 3]], labels=[1, 1]), "1 points but 2 labels"),
        (Prompts(points=[[1, 3]], labels=[2]), "must be 1 (positive) or 0"),
        (Prompts(points=[[1, 2, 3]], labels=[1]), "shape (N, 2)"),
        (Prompts(boxes=[[50, 10, 40, 20]]), "empty or inverted"),
        (Prompts(boxes=[[10, 10, 10, 20]]), "empty or inverted"),
        (Prompts(boxes=[[10, 10, 250, 20]]), "outside the 200x100 image"),
        (Prompts(boxes=[[0, np.inf, 10, 20]]), "NaN or infinite"),
        (Prompts(boxes=[[0, 1, 2]]), "shape (B, 4)"),
        (Prompts(boxes=[[0, 0, 5, 5]], mask_input=np.zeros((64, 64))), "(1, 256, 256)"),
        (Prompts(boxes=[[0, 0, 5, 5]], mask_input=np.full((256, 256), np.nan)), "NaN"),
    ],
)
def test_invalid_prompts_raise_clear_errors(prompts, words):
    with pytest.raises(PromptError, match=None) as info:
        validate_prompts(prompts, SIZE)
    assert words in str(info.value)


def test_prompt_error_is_a_value_error():
    with pytest.raises(ValueError):
        validate_prompts(Prompts(), SIZE)


def test_constructors():
    p = Prompts.from_points([[3, 4]])
    assert p.labels.tolist() == [1] and p.n_points == 1 and p.n_boxes == 0
    assert Prompts.from_boxes([[0, 0, 2, 2], [1, 1, 3, 3]]).n_boxes == 2
