"""The jurisdiction file: typed, validated with errors naming the entry, and the look-ups others rely on."""

from __future__ import annotations

import copy
from pathlib import Path

import pytest
import yaml

from dispatch.gazetteer import GazetteerError, distance_m, load_jurisdiction, parse_jurisdiction

REPO = Path(__file__).resolve().parents[2]
JURISDICTION_FILE = REPO / "config" / "jurisdiction.yaml"


@pytest.fixture(scope="module")
def raw() -> dict:
    return yaml.safe_load(JURISDICTION_FILE.read_text(encoding="utf-8"))


def place(data: dict, place_id: str) -> dict:
    return next(p for p in data["places"] if p["id"] == place_id)


def broken(raw: dict, edit) -> str:
    data = copy.deepcopy(raw)
    edit(data)
    with pytest.raises(GazetteerError) as e:
        parse_jurisdiction(data, source="test.yaml")
    return str(e.value)


def test_demo_file_loads_and_matches_shared_copy(demo_dir: Path) -> None:
    j = load_jurisdiction(JURISDICTION_FILE)
    assert j == load_jurisdiction(demo_dir / "jurisdiction.yaml")
    assert len(j.places) > 40 and len(j.responders) > 25
    assert j.place("piju-city").within == "gaoqiao-market"


def test_lookups() -> None:
    j = load_jurisdiction(JURISDICTION_FILE)
    assert [p.id for p in j.children("gaoqiao-market")] == ["piju-city"]
    assert j.ancestors("piju-city") == ["gaoqiao-market"]
    assert j.grid_of("piju-city") == "yongding-sq"
    assert j.grid_of("gongyuanbeilu-sq") == "gongyuanbeilu-sq"  # a community answers for itself
    assert j.grid_of("paichusuo") is None
    with pytest.raises(KeyError, match="nowhere"):
        j.place("nowhere")


def test_haversine_distance() -> None:
    assert distance_m(34.0, 108.0, 34.0, 108.0) == 0
    assert distance_m(34.0, 108.0, 35.0, 108.0) == pytest.approx(111_195, rel=1e-3)  # one degree of latitude
    assert distance_m(34.0, 108.0, 34.0, 109.0) == pytest.approx(111_195 * 0.8290, rel=1e-3)  # cos(34°)


@pytest.mark.parametrize(
    ("edit", "expected"),
    [
        (lambda d: place(d, "piju-city").update(within="nowhere"), "place 'piju-city': within 'nowhere' is not a known place"),
        (lambda d: place(d, "piju-city").update(grid="atlantis"), "place 'piju-city': grid 'atlantis' is not a known place"),
        (lambda d: d["responders"][0].update(post="mars"), "responder 'p-zhan-zhengyou': post 'mars' is not a known place"),
        (lambda d: d["responders"][0].update(channel="x"), "responder 'p-zhan-zhengyou': channel 'x' is not a known channel"),
        (lambda d: d["places"].append(dict(d["places"][0], name="别处")), "place id 'gongyuanbeilu-sq' is declared twice"),
        (lambda d: d["places"][0].update(aliases=["美食街"]), "alias '美食街' is already used by place 'gongyuanbeilu-sq'"),
        (lambda d: d["places"][0].update(lat=134.0), "places[gongyuanbeilu-sq].lat"),
        (lambda d: d["places"][0].update(colour="red"), "places[gongyuanbeilu-sq].colour: Extra inputs are not permitted"),
        (lambda d: place(d, "meishijie").update(aliases=["夜宵街", ""]), "places[meishijie].aliases: an alias is empty"),
        (lambda d: place(d, "meishijie").update(aliases=["  "]), "places[meishijie].aliases: an alias is empty or blank"),
        (lambda d: place(d, "gaoqiao-market").update(within="piju-city"),
         "place 'gaoqiao-market': within 'piju-city' makes a loop (gaoqiao-market -> piju-city -> gaoqiao-market)"),
        (lambda d: place(d, "piju-city").update(grid="gaoqiao-market"),
         "place 'piju-city': grid 'gaoqiao-market' is a market, not a community"),
    ],
)
def test_validation_names_the_entry(raw: dict, edit, expected: str) -> None:
    message = broken(raw, edit)
    assert expected in message
    assert message.startswith("test.yaml: invalid jurisdiction")


def test_shared_name_is_allowed_only_between_nested_places(raw: dict) -> None:
    j = parse_jurisdiction(raw)  # 西光广场: a square inside the compound that also uses it as an alias
    assert j.place("xiguang-guangchang").within == "xiguang-guangchang-xq"
    message = broken(raw, lambda d: place(d, "gaoqiao-market").update(aliases=["西光广场"]))  # 高桥大市场: not nested
    assert "'西光广场'" in message


def test_unreadable_files_give_clear_errors(tmp_path: Path) -> None:
    with pytest.raises(GazetteerError, match="cannot read"):
        load_jurisdiction(tmp_path / "missing.yaml")
    bad = tmp_path / "bad.yaml"
    bad.write_text("places: [unclosed", encoding="utf-8")
    with pytest.raises(GazetteerError, match="not valid YAML"):
        load_jurisdiction(bad)
    bad.write_text("- a list\n", encoding="utf-8")
    with pytest.raises(GazetteerError, match="mapping"):
        load_jurisdiction(bad)
