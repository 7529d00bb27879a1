"""File formats: annotation loading/validation, results writing/loading/validation."""

import json
from pathlib import Path

import numpy as np
import pytest

from tal_pipeline._version import __version__
from tal_pipeline.errors import InputError
from tal_pipeline.postprocess import Segment
from tal_pipeline.results import (
    RESULTS_VERSION,
    Annotations,
    Results,
    load_annotations,
    load_results,
    make_results,
    split_results,
    write_results,
)

ANN = {
    "version": "thumos14",
    "database": {
        "v1": {
            "subset": "Validation",
            "duration": 30.0,
            "fps": 30.0,
            "annotations": [
                {"label": "jump", "segment": [1.0, 4.0], "label_id": 3},
                {"label": "clap", "segment": [10.0, 12.5]},
            ],
        },
        "v2": {"subset": "Test", "duration": 20.0, "annotations": [{"label": "jump", "segment": [0, 2]}]},
        "v3": {"subset": "Test", "duration": 10.0, "annotations": []},
    },
}


def _write(tmp_path, obj, name="ann.json"):
    path = tmp_path / name
    path.write_text(json.dumps(obj))
    return path


def test_load_annotations(tmp_path):
    ann = load_annotations(_write(tmp_path, ANN))
    assert isinstance(ann, Annotations)
    assert list(ann.videos) == ["v1", "v2", "v3"]
    v1 = ann.videos["v1"]
    assert (v1.duration, v1.subset, v1.fps) == (30.0, "Validation", 30.0)
    assert v1.segments == (("jump", 1.0, 4.0), ("clap", 10.0, 12.5))
    assert ann.videos["v2"].fps is None
    assert ann.class_names == ["clap", "jump"]
    assert ann.num_instances == 3
    assert ann.subsets == {"Validation": 1, "Test": 2}
    assert load_annotations(ANN).videos.keys() == ann.videos.keys()  # a dict works too


def test_load_annotations_subset(tmp_path):
    path = _write(tmp_path, ANN)
    assert list(load_annotations(path, subset="test").videos) == ["v2", "v3"]  # case-insensitive
    assert list(load_annotations(path, subset="validation,test").videos) == ["v1", "v2", "v3"]
    assert list(load_annotations(path, subset=["Validation"]).videos) == ["v1"]
    with pytest.raises(InputError, match=r"ann\.json: no video in subset training; subsets in the file: "
                       r"Validation \(1\), Test \(2\)"):
        load_annotations(path, subset="training")


def _bad(**video):
    entry = {"subset": "x", "duration": 10.0, "annotations": [{"label": "a", "segment": [0, 1]}]}
    entry.update(video)
    return {"database": {"v1": entry}}


SEG = [{"label": "a", "segment": [0, 1]}, {"label": "a", "segment": [1, 2]}]


@pytest.mark.parametrize(
    "obj, message",
    [
        ([], "ann.json: expected a JSON object with a 'database', got list"),
        ({"videos": {}}, "ann.json: missing 'database'"),
        ({"database": []}, "ann.json: database: expected an object"),
        ({"database": {}}, "ann.json: database: no videos"),
        ({"database": {"v1": 3}}, "ann.json: database['v1']: expected an object, got int"),
        (_bad(duration=None), "ann.json: database['v1'].duration: expected a number >= 0 (seconds), got None"),
        ({"database": {"v1": {"annotations": []}}}, "ann.json: database['v1']: missing 'duration'"),
        (_bad(duration=-1), "database['v1'].duration: expected a number >= 0"),
        (_bad(subset=3), "ann.json: database['v1'].subset: expected a string, got 3"),
        (_bad(fps=0), "ann.json: database['v1'].fps: expected a number > 0, got 0"),
        (_bad(annotations={}), "ann.json: database['v1'].annotations: expected a list, got dict"),
        (_bad(annotations=SEG + ["x"]), "ann.json: database['v1'].annotations[2]: expected an object"),
        (_bad(annotations=SEG + [{"label": "", "segment": [0, 1]}]),
         "ann.json: database['v1'].annotations[2].label: expected a non-empty string, got ''"),
        (_bad(annotations=SEG + [{"label": "a"}]), "ann.json: database['v1'].annotations[2]: missing 'segment'"),
        (_bad(annotations=SEG + [{"label": "a", "segment": [5, 1]}]),
         "ann.json: database['v1'].annotations[2].segment: expected [t0, t1] with t0 <= t1, got [5, 1]"),
        (_bad(annotations=SEG + [{"label": "a", "segment": [1]}]),
         "database['v1'].annotations[2].segment: expected [t0, t1] with t0 <= t1"),
        (_bad(annotations=SEG + [{"label": "a", "segment": ["0", "1"]}]),
         "database['v1'].annotations[2].segment: expected [t0, t1]"),
        (_bad(annotations=SEG + [{"label": "a", "segment": [0, float("nan")]}]),
         "database['v1'].annotations[2].segment: expected [t0, t1]"),
    ],
)
def test_annotation_schema_errors_are_clear(tmp_path, obj, message):
    path = _write(tmp_path, obj)
    with pytest.raises(InputError) as err:
        load_annotations(path)
    assert str(err.value).startswith(str(tmp_path))
    assert message in str(err.value)


def test_annotation_file_errors(tmp_path):
    with pytest.raises(InputError, match="no such file"):
        load_annotations(tmp_path / "missing.json")
    bad = tmp_path / "bad.json"
    bad.write_text('{"database": {')
    with pytest.raises(InputError, match=r"bad\.json: not valid JSON: line 1 column"):
        load_annotations(bad)
    with pytest.raises(InputError, match="is a folder"):
        load_annotations(tmp_path)


def test_annotations_missing_optional_fields(tmp_path):
    ann = load_annotations({"database": {"v": {"duration": 5}}})
    assert ann.videos["v"].subset == "" and ann.videos["v"].segments == ()


SEGS = {"v1": [Segment("jump", 0.9, 1.0, 4.0), Segment("clap", 0.5, 10.0, 12.0)], "v2": []}
META = {"v1": {"path": "/data/v1.mp4", "duration": 30.0, "fps": 10.0}, "v2": {"path": "v2.mp4"}}


def test_make_results_schema():
    res = make_results(SEGS, META, {"backbone": "r3d_18", "model": "demo"})
    assert set(res) == {"version", "results", "external_data", "videos"}
    assert res["version"] == RESULTS_VERSION == "tal-pipeline/" + ".".join(__version__.split(".")[:2])
    assert res["results"]["v1"][0] == {"label": "jump", "score": 0.9, "segment": [1.0, 4.0]}
    assert res["results"]["v2"] == []
    assert res["external_data"] == {"backbone": "r3d_18", "model": "demo"}
    assert res["videos"]["v1"]["duration"] == 30.0
    json.dumps(res)  # serialisable
    # paths and numpy values in metadata become JSON types
    odd = make_results({}, {"v": {"path": Path("/x/v.mp4"), "duration": np.float32(2.5), "n": np.int64(3)}})
    assert odd["videos"]["v"] == {"path": "/x/v.mp4", "duration": 2.5, "n": 3}
    json.dumps(odd)
    # dicts are accepted in place of segments
    assert make_results({"v": [SEGS["v1"][0].to_json()]})["results"]["v"] == res["results"]["v1"][:1]


def test_write_and_load_results_file(tmp_path):
    res = make_results(SEGS, META, {"model": "demo"})
    path = write_results(tmp_path / "sub" / "out.json", res)
    assert path.exists() and not list(path.parent.glob(".*.part"))
    loaded = load_results(path)
    assert isinstance(loaded, Results)
    assert loaded.detections == SEGS
    assert loaded.videos == META and loaded.external_data == {"model": "demo"}
    assert loaded.version == RESULTS_VERSION


def test_load_results_folder(tmp_path):
    res = make_results(SEGS, META, {"model": "demo"})
    folder = tmp_path / "out"
    for vid, part in split_results(res).items():
        assert set(part["results"]) == {vid}
        write_results(folder / f"{vid}.json", part)
    (folder / "failures.json").write_text(json.dumps({"failed": []}))  # not a results file: skipped
    (folder / "notes.txt").write_text("ignored")
    loaded = load_results(folder)
    assert loaded.detections == SEGS
    assert loaded.videos == META


def test_load_results_folder_errors(tmp_path):
    with pytest.raises(InputError, match="no results files"):
        load_results(tmp_path)
    one = make_results({"v1": SEGS["v1"]})
    write_results(tmp_path / "a.json", one)
    write_results(tmp_path / "b.json", one)
    with pytest.raises(InputError, match=r"b\.json: video 'v1' already in .*a\.json"):
        load_results(tmp_path)


def test_load_official_style_results():
    # the official ActivityNet results format (other tools' output) loads too
    obj = {"version": "VERSION 1.3", "results": {"x": [{"label": "a", "score": 2.5, "segment": [0, 1]}]},
           "external_data": {"used": True}}
    loaded = load_results(obj)
    assert loaded.detections == {"x": [Segment("a", 2.5, 0.0, 1.0)]} and loaded.videos == {}


@pytest.mark.parametrize(
    "obj, message",
    [
        ({"result": {}}, "pred.json: missing 'results'"),
        ({"results": []}, "pred.json: results: expected an object"),
        ({"results": {"v": {}}}, "pred.json: results['v']: expected a list of detections, got dict"),
        ({"results": {"v": [3]}}, "pred.json: results['v'][0]: expected an object"),
        ({"results": {"v": [{"score": 1, "segment": [0, 1]}]}}, "results['v'][0].label: expected a non-empty"),
        ({"results": {"v": [{"label": "a", "score": "high", "segment": [0, 1]}]}},
         "pred.json: results['v'][0].score: expected a finite number, got 'high'"),
        ({"results": {"v": [{"label": "a", "score": 1}]}}, "results['v'][0]: missing 'segment'"),
        ({"results": {"v": [{"label": "a", "score": 1, "segment": [2, 1]}]}},
         "pred.json: results['v'][0].segment: expected [t0, t1] with t0 <= t1, got [2, 1]"),
        ({"results": {}, "videos": []}, "pred.json: videos: expected an object"),
    ],
)
def test_results_schema_errors_are_clear(tmp_path, obj, message):
    path = _write(tmp_path, obj, "pred.json")
    with pytest.raises(InputError) as err:
        load_results(path)
    assert message in str(err.value)
