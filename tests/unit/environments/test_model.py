"""The environment model: validation, the built-ins, who may use which, and what a
session request starts from."""

from __future__ import annotations

import pytest

from sandman.environments.model import (
    Choice,
    Environment,
    app_urls,
    builtin_environments,
    checked_apps,
    checked_fields,
    choose,
    merged,
    new_environment,
    patched,
)
from sandman.errors import Forbidden, InvalidRequest

BUILTINS = builtin_environments("sandman-workspace:latest")


def test_the_built_ins_and_their_images() -> None:
    assert list(BUILTINS) == ["base", "jupyter", "pytorch", "tensorflow"]
    assert BUILTINS["base"].image == "sandman-workspace:latest"
    assert BUILTINS["base"].apps == ("shell",)
    assert BUILTINS["jupyter"].image == "sandman-jupyter:latest"
    assert BUILTINS["pytorch"].apps == ("shell", "jupyterlab", "vscode")
    assert all(e.builtin and not e.allowed_teams for e in BUILTINS.values())


def test_apps_are_known_ordered_and_always_include_the_shell() -> None:
    assert checked_apps(["vscode", "jupyterlab"]) == ("shell", "jupyterlab", "vscode")
    assert checked_apps([]) == ("shell",)
    with pytest.raises(InvalidRequest, match="unknown apps 'rstudio'"):
        checked_apps(["rstudio"])


@pytest.mark.parametrize(
    ("values", "message"),
    [
        ({"image": "Bad Image"}, "not an image reference"),
        ({"image": "x", "colour": "red"}, "unknown fields: colour"),
        ({"image": "x", "default_profile": "1g 5gb"}, "not a GPU profile"),
        ({"image": "x", "allowed_teams": ["ok", "no way"]}, "invalid team names"),
        ({"description": "x" * 501}, "at most 500"),
    ],
)
def test_bad_fields_are_refused_saying_which(values: dict[str, object], message: str) -> None:
    with pytest.raises(InvalidRequest, match=message):
        checked_fields(values)


def test_a_new_environment_needs_a_good_name_and_an_image() -> None:
    made = new_environment("cuda-12", {"image": "reg.local/cuda:12", "allowed_teams": ["b", "a"]})
    assert made == Environment("cuda-12", "reg.local/cuda:12", allowed_teams=("a", "b"))
    with pytest.raises(InvalidRequest, match="needs an image"):
        new_environment("cuda", {})
    with pytest.raises(InvalidRequest, match="must match"):
        new_environment("Cuda", {"image": "x"})


def test_a_registered_row_overrides_a_built_in() -> None:
    restricted = patched(BUILTINS["pytorch"], {"allowed_teams": ["vision"]})
    found = merged(BUILTINS, [restricted, Environment("zeta", "z:1")])
    assert found["pytorch"].allowed_teams == ("vision",) and found["pytorch"].builtin
    assert not found["zeta"].builtin
    assert list(found) == ["base", "jupyter", "pytorch", "tensorflow", "zeta"]


def test_a_request_starts_from_base_by_default_and_from_its_environment() -> None:
    assert choose(BUILTINS, "ann", [], None, None) == Choice("sandman-workspace:latest", "base")
    assert choose(BUILTINS, "ann", [], None, "jupyter").image == "sandman-jupyter:latest"


def test_image_and_environment_together_are_refused() -> None:
    with pytest.raises(InvalidRequest, match="not both"):
        choose(BUILTINS, "ann", [], "sandman-jupyter:latest", "jupyter")


def test_an_unknown_environment_is_refused_naming_the_known() -> None:
    with pytest.raises(InvalidRequest, match="unknown environment 'r'; known: base, jupyter"):
        choose(BUILTINS, "ann", [], None, "r")


def test_an_environments_image_needs_no_allowed_images_and_is_that_environment() -> None:
    chosen = choose(BUILTINS, "ann", [], "sandman-jupyter:latest", None, allowed_images=[])
    assert chosen == Choice("sandman-jupyter:latest", "jupyter")
    assert choose(BUILTINS, "ann", [], "other:1", None, ["other:1"]) == Choice("other:1", None)
    with pytest.raises(InvalidRequest, match="neither an environment's image"):
        choose(BUILTINS, "ann", [], "other:2", None, ["other:1"])


def test_allowed_teams_are_enforced_naming_the_environment() -> None:
    envs = merged(BUILTINS, [patched(BUILTINS["pytorch"], {"allowed_teams": ["vision"]})])
    assert choose(envs, "ann", ["vision"], None, "pytorch").environment == "pytorch"
    with pytest.raises(Forbidden, match="environment 'pytorch' is for teams vision; ann"):
        choose(envs, "ann", ["nlp"], None, "pytorch")
    with pytest.raises(Forbidden, match="'pytorch'"):
        choose(envs, "ann", [], "sandman-pytorch:latest", None)


def test_an_environments_default_profile_comes_with_the_choice() -> None:
    envs = merged(BUILTINS, [patched(BUILTINS["jupyter"], {"default_profile": "1g.5gb"})])
    assert choose(envs, "ann", [], None, "jupyter").default_profile == "1g.5gb"


def test_app_urls_list_only_the_web_apps_offered() -> None:
    sid = "0b0e"
    assert app_urls(BUILTINS["jupyter"], "http://apps.example:8081/", sid) == {
        "jupyterlab": f"http://apps.example:8081/s/{sid}/lab/",
        "vscode": f"http://apps.example:8081/s/{sid}/code/",
    }
    assert app_urls(BUILTINS["base"], "http://apps.example", sid) == {}
    assert app_urls(BUILTINS["jupyter"], None, sid) == {}
    assert app_urls(None, "http://apps.example", sid) == {}
