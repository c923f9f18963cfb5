"""Progress that a log shows (issue 24 item 2, issue 25 item 9): a rich bar on a terminal,
plain lines (done/total, %, rate, ETA; Mpx/s for a slide's tiles) when stderr is a file or a
pipe. One helper (partsup.cli.common.progress_bar) for predict, evaluate and calibrate."""
from __future__ import annotations

import io
import re

import numpy as np
from PIL import Image
from rich.console import Console
from rich.progress import Progress

from partsup.cli import common
from partsup.cli.common import PlainProgress, progress_bar

from helpers import make_slide, run_predict, slide_image

LINE = re.compile(r"^(?P<label>.+): (?P<done>\d+)/(?P<total>\d+) \((?P<pct>\d+) %\)"
                  r"(?:, (?P<rate>[\d.e+-]+) ?(?P<unit>Mpx/s|/s))?(?:, (?:ETA|in) .+)?$")


def lines(text: str, label: str) -> list[re.Match]:
    found = [LINE.match(ln.strip()) for ln in text.splitlines()]
    return [m for m in found if m and m["label"] == label]


def test_plain_lines_every_tenth_and_every_ten_seconds():
    now = [0.0]
    out = io.StringIO()
    bar = PlainProgress(Console(file=out, width=200), clock=lambda: now[0])
    tiles = bar.add_task("tiles", total=None, file="slide", px=1000 * 1000)
    for done in range(1, 41):
        now[0] += 0.5  # 2 tiles of 1 Mpx per second
        bar.update(tiles, completed=done, total=40)
    got = lines(out.getvalue(), "tiles slide")
    assert [int(m["done"]) for m in got] == [4 * k for k in range(1, 11)]  # each 10 %
    assert {m["rate"] for m in got} == {"2"} and {m["unit"] for m in got} == {"Mpx/s"}
    assert out.getvalue().splitlines()[0] == "tiles slide: 4/40 (10 %), 2 Mpx/s, ETA 18 s"
    assert out.getvalue().splitlines()[-1] == "tiles slide: 40/40 (100 %), 2 Mpx/s, in 20 s"
    slow = bar.add_task("evaluate ds/test", total=1000)
    out.truncate(0), out.seek(0)
    for _ in range(30):
        now[0] += 1.0  # 1 image per second: 10 s pass long before 10 % do
        bar.advance(slow)
    assert [int(m["done"]) for m in lines(out.getvalue(), "evaluate ds/test")] == [10, 20, 30]
    assert "1/s, ETA 16 min" in out.getvalue().splitlines()[-1]


def test_a_terminal_gets_the_rich_bar_and_a_log_gets_plain_lines(capsys):
    tty = Console(file=io.StringIO(), force_terminal=True)
    assert isinstance(progress_bar(tty), Progress)
    log = progress_bar(Console(file=io.StringIO()))  # stdout redirected, stderr captured
    assert isinstance(log, PlainProgress) and log.console.stderr
    with log as bar:
        task = bar.add_task("maps val", total=2)
        bar.advance(task)
        bar.advance(task)
    assert [m["done"] for m in lines(capsys.readouterr().err, "maps val")] == ["1", "2"]


def test_predict_on_a_slide_logs_its_tiles_and_a_folder_its_images(tmp_path, plugin,
                                                                   checkpoint, capsys):
    path = make_slide(tmp_path / "s.tif", scale=0.5, mpp=0.5, tile=128)
    common_args = ["--checkpoint", checkpoint, "--device", "cpu", "--format", "csv",
                   "--no-overlay"]
    assert run_predict([path, *common_args, "--out", tmp_path / "o1", "--slide-tile", "256"],
                       plugin) == 0
    err = capsys.readouterr().err
    tiles = lines(err, "tiles s")
    assert len(tiles) >= 2, err
    totals = {int(m["total"]) for m in tiles}
    assert len(totals) == 1 and int(tiles[-1]["done"]) == totals.pop()
    assert [int(m["done"]) for m in tiles] == sorted(int(m["done"]) for m in tiles)
    assert {m["unit"] for m in tiles} == {"Mpx/s"} and tiles[-1]["pct"] == "100"
    assert [(m["done"], m["total"]) for m in lines(err, "predict s")] == [("1", "1")]
    folder = tmp_path / "images"
    folder.mkdir()
    img = slide_image()
    for i in range(3):
        Image.fromarray(np.ascontiguousarray(img[:256, 256 * i:256 * (i + 1)])).save(
            folder / f"im{i}.png")
    assert run_predict([folder, *common_args, "--out", tmp_path / "o2", "--mpp", "0.25"],
                       plugin) == 0
    err = capsys.readouterr().err
    done = [m for m in (LINE.match(ln.strip()) for ln in err.splitlines())
            if m and m["label"].startswith("predict ")]
    assert [(m["done"], m["total"]) for m in done] == [("1", "3"), ("2", "3"), ("3", "3")]
    assert done[-1]["label"] == "predict im2" and done[-1]["unit"] == "/s"


def test_predict_on_a_terminal_draws_the_bar_not_lines(tmp_path, plugin, checkpoint, capsys,
                                                       monkeypatch):
    made: list[Progress] = []

    class Recorded(Progress):
        def __init__(self, *args, **kwargs):
            super().__init__(*args, **kwargs)
            made.append(self)

        def remove_task(self, task_id):  # keep the slide's task to look at it
            self.removed = [*getattr(self, "removed", []), self._tasks[task_id]]
            super().remove_task(task_id)

    monkeypatch.setattr(common, "Progress", Recorded)
    monkeypatch.setattr(Console, "is_terminal", property(lambda self: True))
    path = make_slide(tmp_path / "s.tif", scale=0.5, mpp=0.5, tile=128)
    assert run_predict([path, "--checkpoint", checkpoint, "--device", "cpu", "--format", "csv",
                        "--no-overlay", "--out", tmp_path / "o", "--slide-tile", "256"],
                       plugin) == 0
    assert len(made) == 1
    (slide,) = made[0].removed
    assert slide.description == "tiles" and slide.completed == slide.total > 0
    assert slide.fields["px"] == 256 * 256
    assert lines(capsys.readouterr().err, "tiles s") == []
