"""The rules for target names and tags (repository/names.py), shared by every writer."""

from __future__ import annotations

import pytest

from strongroom.errors import InvalidName
from strongroom.repository.names import (
    MAX_TAGS,
    check_tags,
    check_target_name,
    is_valid_target_name,
    tag_problem,
    target_name_problem,
)


@pytest.mark.parametrize(
    "name", ["shop", "shop-2", "my shop", "ünï ☃", "-dash", "a.b_c", "x" * 128]
)
def test_usable_target_names_pass(name: str) -> None:
    assert target_name_problem(name) is None and check_target_name(name) == name


@pytest.mark.parametrize(
    ("name", "says"),
    [
        ("", "empty"),
        ("..", "starts with '.'"),
        (".hidden", "starts with '.'"),
        ("../../etc", "'/'"),
        ("shop/../x", "'/'"),
        ("a\\b", "'\\'"),
        ("tab\there", "U+0009"),
        ("nl\n", "U+000A"),
        ("bidi\u202e", "U+202E"),
        ("nbsp\u00a0x", "U+00A0"),
        (" shop", "starts or ends with a space"),
        ("x" * 129, "129 characters long (at most 128)"),
    ],
)
def test_unsafe_target_names_are_refused_in_one_line(name: str, says: str) -> None:
    assert not is_valid_target_name(name)
    with pytest.raises(InvalidName) as caught:
        check_target_name(name)
    assert says in caught.value.message and "\n" not in caught.value.message
    assert caught.value.exit_code == 2
    assert len(caught.value.message) < 300


@pytest.mark.parametrize(
    ("tag", "says"),
    [
        ("", "empty"),
        ("a,b", "','"),
        ("x" * 65, "65 characters"),
        ("\x1b[31m", "U+001B"),
        ("t ", "space"),
    ],
)
def test_bad_tags_are_refused(tag: str, says: str) -> None:
    problem = tag_problem(tag)
    assert problem is not None and says in problem
    with pytest.raises(InvalidName, match="tag"):
        check_tags(("daily", tag))


def test_tags_are_counted() -> None:
    assert check_tags(["daily", "pre-restore", "ünï"]) == ("daily", "pre-restore", "ünï")
    with pytest.raises(InvalidName, match=f"at most {MAX_TAGS} tags"):
        check_tags(f"t{i}" for i in range(MAX_TAGS + 1))
    with pytest.raises(InvalidName) as caught:  # a 30 MB tag is not quoted whole
        check_tags(["y" * 30_000_000])
    assert len(caught.value.message) < 300
