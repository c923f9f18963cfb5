"""partsup predict replaces only files it wrote: a user's file with an output's name is refused
before any model is loaded, and is left as it was."""
from __future__ import annotations

import json

import numpy as np
from PIL import Image

from partsup.cli.main import main
from partsup.output.outdir import MARKER


def _image(folder):
    folder.mkdir()
    rng = np.random.default_rng(0)
    Image.fromarray(rng.integers(0, 255, (64, 64, 3), dtype=np.uint8)).save(folder / "case.png")
    return folder


def test_predict_refuses_to_replace_a_file_it_did_not_write(tmp_path, capsys):
    images = _image(tmp_path / "images")
    (images / "case.csv").write_text("x,y\n1,2\n")  # the user's own points beside the image
    rc = main(["predict", str(images / "case.png"), "--out", str(images), "--format", "csv",
               "--checkpoint", str(tmp_path / "never-loaded.pt")])
    assert rc == 2
    err = capsys.readouterr().err
    assert "case.csv exists and was not written by partsup" in err
    assert (images / "case.csv").read_text() == "x,y\n1,2\n"
    assert not (images / MARKER).exists()


def test_check_and_record_ownership(tmp_path):
    import pytest
    from partsup.errors import DataError
    from partsup.output.outdir import check_not_foreign, owned_files, record_owned
    out = tmp_path / "out"
    out.mkdir()
    check_not_foreign(out, [out / "a.csv"])  # absent: fine
    (out / "a.csv").write_text("mine")
    with pytest.raises(DataError, match="a.csv exists and was not written by partsup"):
        check_not_foreign(out, [out / "a.csv"])
    record_owned(out, [out / "a.csv", out / "sub" / "b.csv"], "partsup predict")
    assert owned_files(out) == ["a.csv", "sub/b.csv"]
    assert json.loads((out / MARKER).read_text())["written_by"] == "partsup predict"
    check_not_foreign(out, [out / "a.csv"])  # partsup's own now: may be replaced
