"""The region file (bridge/region.py): the example loads, scopes cover what a user expects, bad files say why."""

from __future__ import annotations

from pathlib import Path

import pytest
import yaml

from bridge.region import RegionError, load_region

REPO = Path(__file__).resolve().parents[2]


def test_the_example_region_places_the_demo_station_in_its_bureau():
    region = load_region(REPO / "config" / "region.yaml")
    demo = region.station("gongyuanbeilu")
    assert demo is not None and demo.name == "公园北路派出所"
    assert demo.jurisdiction == REPO / "config" / "jurisdiction.yaml"  # resolved against the region file
    assert region.bureau_of("gongyuanbeilu").name == "新城分局"
    assert region.stations_in("gongyuanbeilu") == {"gongyuanbeilu"}
    assert region.stations_in("xincheng") == {"gongyuanbeilu", "changlezhonglu"}
    assert region.stations_in(None) == {"gongyuanbeilu", "changlezhonglu", "beiyuanmen"}
    # neighbours go both ways, whichever station listed the other
    assert region.neighbours("gongyuanbeilu") == ["beiyuanmen", "changlezhonglu"]
    assert region.neighbours("changlezhonglu") == ["gongyuanbeilu"]
    with pytest.raises(RegionError, match="neither a station nor a 分局"):
        region.stations_in("nowhere")


def write(tmp_path: Path, region: object) -> Path:
    path = tmp_path / "region.yaml"
    path.write_text(region if isinstance(region, str) else yaml.safe_dump(region, allow_unicode=True), encoding="utf-8")
    return path


def station(id_: str, **extra: object) -> dict[str, object]:
    return {"id": id_, "name": f"{id_}派出所", **extra}


@pytest.mark.parametrize(
    ("region", "message"),
    [
        ("name: [unclosed", "not valid YAML"),
        ("- a list", "expected a mapping"),
        ({"name": "市局", "bureaus": []}, "bureaus: List should have at least 1 item"),
        ({"name": "市局", "bureaus": [{"id": "a", "name": "A分局", "stations": [station("s1"), station("s1")]}]},
         "id 's1' is used twice"),
        ({"name": "市局", "bureaus": [{"id": "s1", "name": "A分局", "stations": [station("s1")]}]},
         "id 's1' is used twice \\(a 分局 and a station\\)"),
        ({"name": "市局", "bureaus": [{"id": "a", "name": "A分局", "stations": [station("s1", neighbours=["s9"])]}]},
         "neighbour 's9' is not a station"),
        ({"name": "市局", "bureaus": [{"id": "a", "name": "A分局", "stations": [station("s1", neighbours=["a"])]}]},
         "neighbour 'a' is not a station"),
        ({"name": "市局", "bureaus": [{"id": "a", "name": "A分局", "stations": [station("s.1")]}]},
         r"bureaus\[0\].stations\[0\].id: String should match pattern"),
        ({"name": "市局", "bureaus": [{"id": "a", "name": "A分局", "stations": [station("s1", police=3)]}]},
         r"bureaus\[0\].stations\[0\].police: Extra inputs are not permitted"),
        ({"name": "市局", "bureaus": [{"id": "a", "name": "A分局", "stations": [station("s1", jurisdiction="none.yaml")]}]},
         "station 's1': no jurisdiction file at"),
    ],
)  # fmt: skip
def test_a_bad_region_file_says_what_is_wrong(tmp_path, region, message):
    path = write(tmp_path, region)
    with pytest.raises(RegionError, match=message) as raised:
        load_region(path)
    assert str(path) in str(raised.value)


def test_a_missing_region_file_is_named(tmp_path):
    with pytest.raises(RegionError, match="cannot read"):
        load_region(tmp_path / "absent.yaml")


def test_config_check_loads_the_region_file_a_config_names(tmp_path, capsys):
    import argparse

    from bridge.commands.service import cmd_config_check

    def check(region: Path) -> int:
        config = tmp_path / "central.yaml"
        config.write_text(yaml.safe_dump({
            "jurisdiction": str(REPO / "config" / "jurisdiction.yaml"),
            "channels": [{"id": "ch", "name": "ch", "source": {"type": "pipe"}}],
            "node": {"region": str(region)},
        }), encoding="utf-8")  # fmt: skip
        return cmd_config_check(argparse.Namespace(file=config))

    assert check(REPO / "config" / "region.yaml") == 0
    assert "region: " in (out := capsys.readouterr().out) and "(西安市公安局（示范）: 2 分局, 3 stations)" in out
    assert check(write(tmp_path, {"name": "市局", "bureaus": []})) == 2
    assert "node.region: " in (err := capsys.readouterr().err) and "bureaus: List should have at least 1 item" in err
