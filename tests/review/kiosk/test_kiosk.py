"""The conference kiosk without a browser: pools, drawing, playing, abuse, results, and the separate database."""

from __future__ import annotations

import hashlib
import json
import re
import threading
from collections import Counter
from pathlib import Path

import pytest
from scipy.stats import binomtest

from app import main
from appconfig import AppConfig, Services
from database import image_sets
from database import images as image_store
from database import kiosk as kiosk_store
from database import ratings as rating_store
from database import studies as study_store
from review import studies, study_setup
from review.design import StudyDesign
from review.kiosk import game as kiosk
from review.kiosk import results as kiosk_results
from review.kiosk import ui as kiosk_ui
from review.kiosk.__main__ import main as kiosk_main
from review.kiosk.game import BadAnswer, BadNickname, KioskError, UnknownGame
from review.kiosk.pages import leaderboard_html
from review.kiosk.pools import (
    MANIFEST,
    PoolImage,
    Pools,
    PoolsError,
    auto_size,
    build_pools,
    default_pools_dir,
    load_pools,
    write_pools,
)
from review.kiosk.ui import kiosk_url, lan_ip
from review.study_setup import RaterSpec

PAIR_ANSWER = {"choice_confidence": 3, "pathology_left": "AD", "pathology_right": "NonAD"}


def _memory_pools(checkpoints: int = 4, per_cell: int = 5, real: int = 8, skip: tuple = ()) -> Pools:
    """Pools held in memory (no files): enough to test the pure drawing."""
    images = [PoolImage(f"r-{label}-{i}.png", "real", label, f"real{label}{i}") for label in ("AD", "NonAD")
              for i in range(real)]
    marks = []
    for c in range(checkpoints):
        marks.append({"name": f"checkpoint-{c}", "step": c * 100, "stage": 2, "fingerprint": f"fp{c}"})
        for label in ("AD", "NonAD"):
            if (c, label) in skip:
                continue
            images += [PoolImage(f"s-{c}-{label}-{i}.png", "synthetic", label, f"syn{c}{label}{i}", f"checkpoint-{c}",
                                 c * 100, f"fp{c}") for i in range(per_cell)]
    return Pools(Path("/nowhere"), 64, tuple(images), "memory", tuple(marks))


@pytest.fixture
def pools(review_env, tmp_path) -> Pools:
    db = review_env[0]
    return write_pools(tmp_path / "pools", image_store.list_images(db, source="real", image_sets=["demo"]),
                       image_store.list_images(db, source="synthetic"), image_sets=[image_sets.get_set(db, "demo")])


@pytest.fixture
def kdb(tmp_path):
    db = kiosk_store.open_kiosk_db(tmp_path / "kiosk.db")
    yield db
    db.close()


def _truth(kdb, token) -> dict[int, str]:
    game = kiosk_store.get_game(kdb, hashlib.sha256(token.encode()).hexdigest())
    return {row["position"]: row["synthetic_side"] for row in kiosk_store.game_rounds(kdb, game["id"])}


def _play(kdb, pools, correct: int, rounds: int = kiosk.ROUNDS, seed: int | None = None) -> str:
    """A whole game with exactly ``correct`` right answers; returns its token."""
    token = kiosk.new_game(kdb, pools, rounds, seed)
    truth = _truth(kdb, token)
    for position in range(rounds):
        view = kiosk.next_round(kdb, token)
        assert view.position == position
        right = truth[position]
        kiosk.answer(kdb, token, position, right if position < correct else {"left": "right", "right": "left"}[right])
    assert kiosk.next_round(kdb, token) is None
    return token


def _file_state(path: Path) -> tuple:
    """The database file's bytes and time, and the length of its write-ahead log (a reader may create an empty one)."""
    wal = Path(f"{path}-wal")
    return hashlib.sha256(path.read_bytes()).hexdigest(), path.stat().st_mtime_ns, wal.stat().st_size if wal.exists() else 0


# ---------------------------------------------------------------------------------------------
# Drawing


@pytest.mark.parametrize("seed", range(40))
def test_games_are_balanced_over_checkpoints_pathologies_and_sides(seed):
    rounds = kiosk.draw_game(_memory_pools(), seed)
    assert len(rounds) == 10
    for counts in (Counter(r.checkpoint["fingerprint"] for r in rounds), Counter(r.label for r in rounds)):
        assert max(counts.values()) - min(counts.values()) <= 1
    assert len(Counter(r.checkpoint["fingerprint"] for r in rounds)) == 4
    assert Counter(r.synthetic_side for r in rounds) == {"left": 5, "right": 5}
    files = [image.file for r in rounds for image in (r.real, r.synthetic)]
    assert len(files) == len(set(files))  # no image twice in a game
    assert all(r.real.label == r.label == r.synthetic.label and r.real.source == "real" for r in rounds)


def test_drawing_is_a_pure_function_of_the_seed():
    pools = _memory_pools()
    assert kiosk.draw_game(pools, 7) == kiosk.draw_game(pools, 7)
    assert kiosk.draw_game(pools, 7) != kiosk.draw_game(pools, 8)


def test_a_checkpoint_without_one_pathology_is_still_played():
    rounds = kiosk.draw_game(_memory_pools(checkpoints=2, per_cell=1, real=2, skip=((1, "NonAD"),)), 3)
    assert {(r.checkpoint["fingerprint"], r.label) for r in rounds} == {("fp0", "AD"), ("fp0", "NonAD"), ("fp1", "AD")}


# ---------------------------------------------------------------------------------------------
# Pools


def test_pools_present_every_image_under_a_random_name_with_a_manifest(pools, review_env):
    manifest = json.loads((pools.directory / MANIFEST).read_text())
    assert manifest["size"] == 64 == pools.size  # the smallest native side (64 px test images)
    assert len(pools.images) == 12 + 12 and len(pools.checkpoints) == 2
    for entry in manifest["images"]:
        data = (pools.directory / entry["file"]).read_bytes()
        assert hashlib.sha256(data).hexdigest() == entry["presented_sha256"]
        # A random token and nothing else (a substring check for "AD" failed by chance ~10 % of runs).
        assert re.fullmatch(r"[A-Za-z0-9_-]{16}\.png", entry["file"]) and entry["sha256"] not in entry["file"]
        assert (entry["checkpoint"] is None) == (entry["source"] == "real")
    assert len({entry["file"] for entry in manifest["images"]}) == len(manifest["images"])
    assert manifest["image_sets"] == [{"name": "demo", "kind": "phantom-demo", "public": True}]
    rebuilt = write_pools(pools.directory, image_store.list_images(review_env[0], source="real", image_sets=["demo"]),
                          image_store.list_images(review_env[0], source="synthetic"), image_sets=pools.image_sets)
    assert {i.file for i in rebuilt.images} == {i.file for i in pools.images}  # reused, not presented again


def test_a_kiosk_without_a_public_set_refuses_to_start_a_game_and_says_why(tmp_path):
    from tests.review.conftest import add_images

    config = AppConfig(data_dir=tmp_path / "d", checkpoints_dir=tmp_path / "c", db_path=tmp_path / "study.db")
    with Services(config).db() as db:
        ids = add_images(db, tmp_path / "images", real_sets=("clinic",))  # clinical frames only, not public
        with pytest.raises(PoolsError, match=r"no image set may be shown publicly \(sets: clinic \(clinical, not public\)\)"):
            build_pools(Services(config), checkpoint_ids=ids)
        with pytest.raises(PoolsError, match="'clinic' is clinical, not public; required: clinical, public"):
            build_pools(Services(config), checkpoint_ids=ids, image_sets=["clinic"])
        # Pools written from a set that is not public (or by an older build) never start a game.
        pools_dir = default_pools_dir(config.data_dir)
        with pytest.raises(PoolsError, match="'clinic' may not be shown publicly; rebuild the pools from a public set"):
            write_pools(pools_dir, image_store.list_images(db, source="real"),
                        image_store.list_images(db, source="synthetic"), image_sets=[image_sets.get_set(db, "clinic")])
    with pytest.raises(PoolsError, match="may not be shown publicly"):
        kiosk_ui.build(config)  # the kiosk does not start
    manifest = json.loads((pools_dir / MANIFEST).read_text())
    del manifest["image_sets"]
    (pools_dir / MANIFEST).write_text(json.dumps(manifest))
    with pytest.raises(PoolsError, match="rebuild the pools"):
        load_pools(pools_dir)  # what a game's start reads: refused, with the reason


def test_missing_pools_say_how_to_build_them(tmp_path):
    with pytest.raises(PoolsError, match="python -m review.kiosk pools"):
        load_pools(tmp_path / "nothing")


def test_auto_size_is_the_smallest_native_side_within_limits():
    assert auto_size([{"width": 320, "height": 256}, {"width": 64, "height": 64}]) == 64
    assert auto_size([{"width": 40, "height": 30}]) == 64
    assert auto_size([{"width": 2000, "height": 1500}]) == 512


def test_build_pools_uses_stored_images_of_checkpoints_whose_folder_is_gone(review_env, tmp_path):
    db, data, _, ids = review_env
    config = AppConfig(data_dir=tmp_path / "d", checkpoints_dir=tmp_path / "c", db_path=Path(db.conn.execute(
        "PRAGMA database_list").fetchone()[2]), device="cpu")
    built = build_pools(Services(config), per_label=2, checkpoint_ids=ids, real_per_label=3)
    assert Counter((i.source, i.label) for i in built.images) == {("real", "AD"): 3, ("real", "NonAD"): 3,
                                                                  ("synthetic", "AD"): 4, ("synthetic", "NonAD"): 4}
    with pytest.raises(PoolsError, match="no checkpoint with id"):
        build_pools(Services(config), checkpoint_ids=[999])


# ---------------------------------------------------------------------------------------------
# Playing


def test_a_round_reveals_nothing_until_answered_and_the_first_answer_stands(kdb, pools):
    token = kiosk.new_game(kdb, pools)
    view = kiosk.next_round(kdb, token)
    assert (view.position, view.total, view.choice, view.synthetic_side, view.checkpoint) == (0, 10, None, None, None)
    truth = _truth(kdb, token)[0]
    wrong = "left" if truth == "right" else "right"
    first = kiosk.answer(kdb, token, 0, wrong)
    assert (first.choice, first.synthetic_side, first.correct, first.score) == (wrong, truth, False, 0)
    for _ in range(5):  # rapid repeated taps, even on the other image: nothing new is stored
        again = kiosk.answer(kdb, token, 0, truth)
        assert (again.choice, again.correct, again.score) == (wrong, False, 0)
    assert kdb.execute("SELECT count(*) FROM answers").fetchone()[0] == 1
    assert kiosk.next_round(kdb, token).position == 1


@pytest.mark.parametrize("position, side, message", [
    (0, "middle", "side must be left or right"), (0, "<script>alert(1)</script>", "side must be left or right"),
    (0, None, "side must be left or right"), (99, "left", "between 1 and 10"), (-1, "left", "between 1 and 10"),
    ("x", "left", "must be a number"), (3, "left", "round 4 is not open yet"),
])
def test_bad_answers_are_refused_and_store_nothing(kdb, pools, position, side, message):
    token = kiosk.new_game(kdb, pools)
    kiosk.next_round(kdb, token)
    with pytest.raises(BadAnswer, match=message):
        kiosk.answer(kdb, token, position, side)
    assert kdb.execute("SELECT count(*) FROM answers").fetchone()[0] == 0


@pytest.mark.parametrize("token", ["", "made-up", None, 42])
def test_unknown_games_are_refused(kdb, pools, token):
    with pytest.raises(UnknownGame):
        kiosk.answer(kdb, token, 0, "left")
    with pytest.raises(UnknownGame):
        kiosk.next_round(kdb, token)


def test_two_visitors_never_share_a_round(kdb, pools):
    ann, bob = kiosk.new_game(kdb, pools), kiosk.new_game(kdb, pools)
    assert ann != bob
    kiosk.next_round(kdb, ann)
    kiosk.next_round(kdb, bob)
    kiosk.answer(kdb, ann, 0, "left")
    assert kiosk.next_round(kdb, bob).position == 0  # Ann's answer is not Bob's
    assert kiosk.answer(kdb, bob, 0, "right").choice == "right"
    assert kiosk.answer(kdb, ann, 0, "right").choice == "left"


def test_simultaneous_taps_on_the_same_round_store_one_answer(tmp_path, pools):
    path = tmp_path / "race.db"
    db = kiosk_store.open_kiosk_db(path)
    token = kiosk.new_game(db, pools)
    kiosk.next_round(db, token)
    db.close()
    barrier, results = threading.Barrier(6), []

    def tap(side):
        connection = kiosk_store.open_kiosk_db(path)
        barrier.wait()
        results.append(kiosk.answer(connection, token, 0, side).choice)
        connection.close()

    threads = [threading.Thread(target=tap, args=(side,)) for side in ["left", "right"] * 3]
    for thread in threads:
        thread.start()
    for thread in threads:
        thread.join()
    assert len(set(results)) == 1 and len(results) == 6
    db = kiosk_store.open_kiosk_db(path)
    assert db.execute("SELECT count(*) FROM answers").fetchone()[0] == 1
    db.close()


def test_an_abandoned_game_counts_nowhere(kdb, pools):
    token = kiosk.new_game(kdb, pools)
    for position in range(3):
        kiosk.next_round(kdb, token)
        kiosk.answer(kdb, token, position, "left")
    with pytest.raises(KioskError, match="finish all rounds"):
        kiosk.set_nickname(kdb, token, "Quitter")
    with pytest.raises(KioskError, match="not finished"):
        kiosk_results.game_result(kdb, token, None)
    stats = kiosk_results.live_stats(kdb, None)
    assert (stats.games_started, stats.games_finished, stats.checkpoints, stats.leaderboard) == (1, 0, (), ())
    assert stats.playing_now == 1


def test_the_score_is_the_number_of_correct_picks_against_chance(kdb, pools):
    for correct in (3, 5):
        _play(kdb, pools, correct)
    token = _play(kdb, pools, 8)
    result = kiosk_results.game_result(kdb, token, None)
    assert (result.score, result.rounds) == (8, 10)
    assert result.p_value == pytest.approx(binomtest(8, 10, 0.5, alternative="greater").pvalue)  # 0.0547
    assert sorted(result.others) == [3, 5] and result.better_than == 1.0
    assert sum(line.yours.n for line in result.checkpoints) == 10
    assert sum(line.yours.correct for line in result.checkpoints) == 8
    assert sum(line.visitors.n for line in result.checkpoints) == 30
    assert sum(line.visitors.correct for line in result.checkpoints) == 16
    low, high = result.checkpoints[0].visitors.ci
    assert 0 <= low <= result.checkpoints[0].visitors.rate <= high <= 1


# ---------------------------------------------------------------------------------------------
# Nicknames and the leaderboard


@pytest.mark.parametrize("raw, cleaned", [
    ("  Ada   Lovelace \n", "Ada Lovelace"), ("Zoë_99-x", "Zoë_99-x"), ("ｆｕｌｌｗｉｄｔｈ", "fullwidth"),
    ("नमस्ते", "नमस्ते"), ("李小龍", "李小龍"), ("", None), ("   ", None), (None, None), ("x" * 24, "x" * 24),
])
def test_nicknames_are_normalised(raw, cleaned):
    assert kiosk.clean_nickname(raw) == cleaned


@pytest.mark.parametrize("raw, message", [
    ("<script>alert(1)</script>", "letters, digits, spaces"), ("<b>bold</b>", "LESS-THAN SIGN"),
    ("a" * 10_000, "at most 24 characters; this one has 10000"), ("x" * 25, "this one has 25"),
    ("Bob\u202eevil", "RIGHT-TO-LEFT OVERRIDE"), ("a" + "\u0301" * 6, "COMBINING ACUTE"), ("tab\x00", "U\\+0000"),
    ("robert'); DROP TABLE games;--", "APOSTROPHE"), (["list"], "must be text"),
])
def test_bad_nicknames_are_refused_with_the_reason(raw, message):
    with pytest.raises(BadNickname, match=f"(?i){message}"):
        kiosk.clean_nickname(raw)


def test_leaderboard_orders_by_score_then_speed_and_keeps_one_row_per_game(kdb, pools):
    names = {}
    for name, correct in (("slow nine", 9), ("seven", 7), ("fast nine", 9), ("ten", 10)):
        names[name] = _play(kdb, pools, correct)
    kdb.execute("UPDATE games SET seconds = 100 WHERE score = 9 AND id = 1")
    kdb.execute("UPDATE games SET seconds = 30 WHERE score = 9 AND id = 3")
    for name, token in names.items():
        assert kiosk.set_nickname(kdb, token, name) == name
    kiosk.set_nickname(kdb, names["seven"], "seven again")  # renaming replaces, never duplicates
    with pytest.raises(BadNickname):
        kiosk.set_nickname(kdb, names["ten"], "<img src=x onerror=alert(1)>")
    board = kiosk.leaderboard(kdb)
    assert [(row["rank"], row["nickname"], row["score"]) for row in board] == [
        (1, "ten", 10), (2, "fast nine", 9), (3, "slow nine", 9), (4, "seven again", 7)]
    assert kiosk_store.hide_nickname(kdb, "ten") == 1
    assert [row["nickname"] for row in kiosk.leaderboard(kdb, limit=2)] == ["fast nine", "slow nine"]


def test_leaderboard_html_escapes_whatever_reached_the_database(kdb, pools):
    token = _play(kdb, pools, 6)
    kdb.execute("UPDATE games SET nickname = '<script>x</script>' WHERE id = 1")  # past the validation, somehow
    page = leaderboard_html(kiosk.leaderboard(kdb))
    assert "<script>" not in page and "&lt;script&gt;x&lt;/script&gt;" in page
    assert token


# ---------------------------------------------------------------------------------------------
# The experts, read-only, and the separate database


def _pair_study(db, data, admin, ids, name, raters, simulated=False, choice="left"):
    design = StudyDesign(mode="pair", checkpoint_ids=tuple(ids), images_per_cell=2, size=64, seed=4)
    created = study_setup.create_study(db, data, admin, name, design, [RaterSpec(r, f"{r}-password") for r in raters],
                                       simulated=simulated)

    study_store.set_study_audit(db, created.study_id, {"passed": True, "leaks": []})
    study_setup.open_study(db, admin, created.study_id)
    for rater in raters:
        session = studies.sign_in(db, rater, f"{rater}-password")
        while (view := studies.next_item(db, session, created.study_id)) is not None:
            studies.submit(db, session, created.study_id, view.trial_id, {**PAIR_ANSWER, "synthetic_choice": choice},
                           f"key-{view.trial_id:08d}")
    return created.study_id


def test_experts_accuracy_comes_read_only_from_pair_studies(review_env, tmp_path, pools, kdb):
    db, data, admin, ids = review_env
    real_id = _pair_study(db, data, admin, ids, "experts", ["ann", "bob"])
    sim_id = _pair_study(db, data, admin, ids, "panel", ["sim-a"], simulated=True, choice="right")
    expected = Counter()
    for study_id, panel in ((real_id, "experts"), (sim_id, "simulated panel")):
        for row in rating_store.export_rows(db, study_id):
            if row["image_source"] == "synthetic" and row["trial_kind"] == "normal":
                expected[(row["checkpoint_fingerprint"], panel, "n")] += 1
                expected[(row["checkpoint_fingerprint"], panel, "ok")] += row["synthetic_choice"] == row["synthetic_side"]
    study_path = Path(db.conn.execute("PRAGMA database_list").fetchone()[2])
    db.close()
    before = _file_state(study_path)

    experts = kiosk_results.expert_accuracy(study_path)
    assert set(experts) == {(fp, panel) for fp in ("fp0", "fp1") for panel in ("experts", "simulated panel")}
    for (fingerprint, panel), p in experts.items():
        assert (p.correct, p.n) == (expected[(fingerprint, panel, "ok")], expected[(fingerprint, panel, "n")]) and p.n
    token = _play(kdb, pools, 6)
    result = kiosk_results.game_result(kdb, token, study_path)
    assert all(set(line.experts) == {"experts", "simulated panel"} for line in result.checkpoints)
    kiosk_results.live_stats(kdb, study_path)
    assert _file_state(study_path) == before  # never written, never migrated, never checkpointed
    assert kiosk_results.expert_accuracy(tmp_path / "missing.db") == {}
    (tmp_path / "garbage.db").write_bytes(b"not a database" * 100)
    assert kiosk_results.expert_accuracy(tmp_path / "garbage.db") == {}


def test_kiosk_plays_never_touch_the_study_database(review_env, pools, tmp_path):
    db = review_env[0]
    study_path = Path(db.conn.execute("PRAGMA database_list").fetchone()[2])
    tables = set(db.table_names())
    db.close()
    before = _file_state(study_path)
    kdb = kiosk_store.open_kiosk_db(tmp_path / "kiosk.db")
    kiosk.set_nickname(kdb, _play(kdb, pools, 4), "Visitor")
    kdb.close()
    assert _file_state(study_path) == before
    assert not tables & {"games", "rounds", "answers"}


# ---------------------------------------------------------------------------------------------
# Command line, config and the page's address


def test_reset_needs_confirmation_and_hide_takes_a_name_off(tmp_path, pools, capsys):
    path = tmp_path / "k.db"
    db = kiosk_store.open_kiosk_db(path)
    kiosk.set_nickname(db, _play(db, pools, 5), "Rude Name")
    db.close()
    common = ["--data-dir", str(tmp_path), "--kiosk-db", str(path)]
    assert kiosk_main([*common, "hide", "Rude Name"]) == 0
    db = kiosk_store.open_kiosk_db(path)
    assert kiosk.leaderboard(db) == []
    db.close()
    assert kiosk_main([*common, "reset"]) == 2 and path.exists()
    assert kiosk_main([*common, "reset", "--yes"]) == 0 and not path.exists()
    assert "--yes" in capsys.readouterr().err


def test_kiosk_url_for_phones():
    def config(host):
        return AppConfig(data_dir=Path("d"), checkpoints_dir=Path("c"), db_path=Path("x"), host=host, port=7860)

    assert kiosk_url(config("127.0.0.1")) is None
    assert kiosk_url(config("192.168.1.5")) == "http://192.168.1.5:7860/"
    address = lan_ip()
    assert kiosk_url(config("0.0.0.0")) == (None if address is None else f"http://{address}:7860/")


def test_the_kiosk_exposes_only_live_results_and_refuses_to_start_without_pools(pools, tmp_path):
    from gradio_client import Client

    from tests.e2e.conftest import _free_port

    with pytest.raises(SystemExit, match="python -m review.kiosk pools"):
        main(["--kiosk", "--data-dir", str(tmp_path / "empty")])
    config = AppConfig(data_dir=tmp_path / "d", checkpoints_dir=tmp_path / "c", db_path=tmp_path / "d" / "study.db")
    (config.data_dir / "kiosk").mkdir(parents=True)
    pools.directory.rename(config.data_dir / "kiosk" / "pools")
    app = kiosk_ui.build(config, idle_s=5).queue()
    app.launch(prevent_thread_lock=True, server_name="127.0.0.1", server_port=_free_port(), quiet=True, show_error=True)
    try:
        endpoints = Client(app.local_url, verbose=False).view_api(print_info=False, return_format="dict")["named_endpoints"]
    finally:
        app.close()
    # The game's events are not API endpoints: a script could farm the leaderboard (the page still works).
    assert set(endpoints) == {"/live_results"}
    assert not config.db_path.exists()  # the kiosk never creates or writes the study database
