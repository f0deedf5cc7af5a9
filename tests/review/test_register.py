"""Tests for review.register: real images from a folder or CSV into the study database."""

from __future__ import annotations

import hashlib
import io
from pathlib import Path

import pytest
from PIL import Image

from appconfig import default_db_path
from database import images as image_store
from database.connection import open_db
from review.register import main, register_real_images

REPO_ROOT = Path(__file__).resolve().parents[2]
REAL_SAMPLE = REPO_ROOT.parent / "shared" / "data" / "real-sample"


@pytest.fixture
def folder(tmp_path: Path) -> Path:
    root = tmp_path / "frames"
    for label, colours in {"AD": [(200, 0, 0), (180, 10, 10)], "NonAD": [(0, 200, 0)]}.items():
        (root / label).mkdir(parents=True)
        for index, colour in enumerate(colours):
            Image.new("RGB", (8, 6), colour).save(root / label / f"{index}.png")
    return root


def test_register_stores_absolute_paths_and_is_idempotent(folder: Path, monkeypatch) -> None:
    monkeypatch.chdir(folder.parent)
    db = open_db(":memory:")
    report = register_real_images(db, Path("frames"))
    assert (report.added, report.already_stored) == (3, 0)

    images = image_store.list_images(db, source="real")
    assert len(images) == 3
    for image in images:
        path = Path(image["path"])
        assert path.is_absolute() and path == path.resolve()
        assert image["sha256"] == hashlib.sha256(path.read_bytes()).hexdigest()
        assert image["origin"] == str(folder)
        assert image["label"] == path.parent.name

    again = register_real_images(db, folder)
    assert (again.added, again.already_stored) == (0, 3)
    db.close()


def test_default_db_path(monkeypatch) -> None:
    monkeypatch.delenv("POLYP_DB", raising=False)
    monkeypatch.delenv("POLYP_DATA_DIR", raising=False)
    assert default_db_path() == Path(__file__).resolve().parents[2] / "data" / "polypturing.db"
    monkeypatch.setenv("POLYP_DB", "/tmp/elsewhere.db")
    assert default_db_path() == Path("/tmp/elsewhere.db")


def test_cli_end_to_end(folder: Path, tmp_path: Path, capsys) -> None:
    (folder / "NonAD" / "dup.png").write_bytes((folder / "AD" / "0.png").read_bytes())
    buffer = io.BytesIO()
    Image.new("RGB", (16, 16)).save(buffer, format="PNG")
    (folder / "AD" / "broken.png").write_bytes(buffer.getvalue()[:50])
    (folder / "AD" / "readme.txt").write_text("hello")
    db_path = tmp_path / "db" / "study.db"

    assert main(["--data", str(folder), "--db", str(db_path)]) == 0

    out = capsys.readouterr().out
    assert "added: 3" in out and "already stored: 0" in out
    assert "NonAD/dup.png = AD/0.png" in out
    assert "AD/broken.png: unreadable image" in out
    assert "AD/readme.txt: unsupported file type '.txt'" in out
    assert "real images now stored: AD 2, NonAD 1" in out
    db = open_db(db_path)
    assert db.journal_mode == "wal"
    assert image_store.count_images(db)["real"] == {"AD": 2, "NonAD": 1}
    db.close()

    assert main(["--data", str(folder), "--db", str(db_path)]) == 0
    assert "added: 0" in capsys.readouterr().out


def test_cli_uses_polyp_db_env(folder: Path, tmp_path: Path, monkeypatch, capsys) -> None:
    monkeypatch.setenv("POLYP_DB", str(tmp_path / "env.db"))
    assert main(["--data", str(folder)]) == 0
    assert (tmp_path / "env.db").exists()


def test_cli_bad_path_exits_2_with_message(tmp_path: Path, capsys) -> None:
    code = main(["--data", str(tmp_path / "missing"), "--db", str(tmp_path / "x.db")])
    captured = capsys.readouterr()
    assert code == 2
    assert "missing" in captured.err and "does not exist" in captured.err
    assert "DIR/AD/" in captured.err
    assert captured.out == ""


def test_cli_help_describes_layouts(capsys) -> None:
    with pytest.raises(SystemExit) as exit_info:
        main(["--help"])
    assert exit_info.value.code == 0
    out = capsys.readouterr().out
    assert "AD/" in out and "NonAD/" in out and "file,label" in out


@pytest.mark.parametrize("layout", ["folder", "csv"])
def test_register_real_sample_in_place(layout: str) -> None:
    if not REAL_SAMPLE.is_dir():
        pytest.skip(f"real sample frames not present at {REAL_SAMPLE}")
    source = REAL_SAMPLE if layout == "folder" else REAL_SAMPLE / "MANIFEST.csv"
    db = open_db(":memory:")
    report = register_real_images(db, source)
    assert (report.added, report.problems, report.duplicates) == (24, [], [])
    assert image_store.count_images(db)["real"] == {"AD": 12, "NonAD": 12}
    for image in image_store.list_images(db):
        assert Path(image["path"]).parent == REAL_SAMPLE.resolve() / image["label"]
        assert image["width"] == 1280
    db.close()


def test_images_go_into_a_named_set_with_its_flags(folder: Path, tmp_path: Path, capsys) -> None:
    from database import image_sets

    db_path = tmp_path / "sets.db"
    assert main(["--data", str(folder), "--db", str(db_path), "--set", "booth", "--kind", "clinical", "--public"]) == 0
    out = capsys.readouterr().out
    assert "image set 'booth' (clinical, public)" in out and "image set booth (clinical, public): AD 2, NonAD 1" in out
    # A set's flags are fixed when it is made.
    assert main(["--data", str(folder), "--db", str(db_path), "--set", "booth", "--kind", "phantom-demo"]) == 2
    assert "is clinical, public; its flags are fixed" in capsys.readouterr().err
    assert main(["--data", str(folder), "--db", str(db_path), "--set", "bad name!"]) == 2
    assert "image set name 'bad name!' is not valid" in capsys.readouterr().err
    with open_db(db_path) as db:
        booth = image_sets.get_set(db, "booth")
        assert booth["provenance"]["first_source"] == str(folder.resolve())
        assert len(image_store.list_images(db, source="real", image_sets=["booth"])) == 3
        assert image_store.list_images(db, source="real", image_sets=["default"]) == []


def test_a_phantom_set_never_goes_into_a_clinical_set(folder: Path, tmp_path: Path, capsys) -> None:
    from generation.phantom.frames import write_phantom_set

    phantoms = tmp_path / "phantoms"
    write_phantom_set(phantoms, 2, seed=1)
    db_path = tmp_path / "p.db"
    assert main(["--data", str(folder), "--db", str(db_path), "--set", "clinic"]) == 0
    for extra in (["--set", "clinic"], ["--set", "other", "--kind", "clinical"]):
        assert main(["--data", str(phantoms), "--db", str(db_path), *extra]) == 2
        assert "phantom frames never go into the clinical image set" in capsys.readouterr().err
    assert main(["--data", str(phantoms), "--db", str(db_path)]) == 0
    assert "image set 'demo' (phantom-demo, public)" in capsys.readouterr().out
    with open_db(db_path) as db:
        assert len(image_store.list_images(db, source="real", image_sets=["clinic"])) == 3


@pytest.mark.parametrize("kind", ["fifo", "loop"])
def test_fifos_and_link_loops_are_refused_with_one_line_before_anything_is_written(folder, tmp_path, capsys, kind):
    import os

    special = folder / "AD" / "zz.png"
    if kind == "fifo":
        os.mkfifo(special)  # reading it would block for ever
    else:
        special.symlink_to(special)
    db_path = tmp_path / "special.db"
    assert main(["--data", str(folder), "--db", str(db_path)]) == 2
    err = capsys.readouterr().err
    assert err.count("\n") == 1 and "zz.png is a" in err and ("FIFO" in err if kind == "fifo" else "link loop" in err)
    with open_db(db_path) as db:
        assert image_store.count_images(db)["real"] == {"AD": 0, "NonAD": 0}
    # The same through a CSV that lists the file.
    (tmp_path / "list.csv").write_text(f"file,label\n{folder / 'AD' / '0.png'},AD\n{special},AD\n")
    assert main(["--data", str(tmp_path / "list.csv"), "--db", str(db_path)]) == 2
    assert "zz.png is a" in capsys.readouterr().err
