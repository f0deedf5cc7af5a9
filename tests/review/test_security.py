"""Every endpoint of the served app, named or hidden, called as anonymous, rater and admin against a role table.

The calls go over HTTP the way a browser (or an attacker) makes them: ``/gradio_api/queue/join`` with
a ``fn_index``, so hidden events (``api_name=False``, which gradio_client refuses to call) are
reached too. Each event gets the default values of its input components, with the caller's session
token in the session inputs. The role check comes first, so a caller below an event's role gets the
refusal whatever the other inputs, and a caller at or above it never does.
"""

from __future__ import annotations

import json
import secrets
import urllib.request

import httpx
import pytest

from app import create_app
from appconfig import AppConfig, Services
from database import studies as study_store
from database.connection import connect, open_db
from evaluation.demo_project import DemoBuild, DemoSizes
from review import studies, study_setup
from review.design import StudyDesign
from tests.review.conftest import ADMIN_PASSWORD, add_images

ROLES = ("anonymous", "rater", "admin")
REFUSAL = {"anonymous": "please sign in|Generating needs an admin account",
           "rater": "needs an admin account|Generating needs an admin account"}

# Named endpoints: the lowest role that may use them.
NAMED = {
    "sign_in": "anonymous",
    "next_trial": "rater", "submit_rating": "rater", "save_profile": "rater",
    "list_studies": "admin", "create_study": "admin", "audit_study": "admin", "open_study": "admin",
    "close_study": "admin", "study_progress": "admin", "export_ratings": "admin", "revoke_sessions": "admin",
    "reissue_invitation": "admin",
    "compute_metrics": "admin", "metric_results": "admin", "segmentation_test": "admin",
    "analysis_studies": "admin", "analyse_study": "admin", "analysis_report": "admin",
    "default_prompt": "admin", "list_checkpoints": "admin", "generate": "admin",
    "create_admin": "anonymous",  # the first-run setup: refused to everyone without the console's token
    "demo_project_start": "admin",
}
# Named events that fire for everyone when the session changes: below their role they answer emptily.
QUIET_NAMED = {"analysis_studies"}
# Hidden events, by trigger: (role, how a caller below the role is answered). "refused" is an
# error with the refusal message; "quiet" is an answer that gives nothing away (checked per event).
HIDDEN = {
    "submit:Password": ("anonymous", None),  # Enter in the password box: sign-in
    "click:Sign out": ("anonymous", None),
    "load:": ("anonymous", None),  # the page load: invitation links, a stored session
    "change:Study": ("rater", "quiet"),  # remembers the chosen study in the browser
    "then:": ("admin", "quiet"),  # after sign-in or -out: the Generate tab's checkpoint list, empty unless admin
    "then:export_ratings": ("admin", "quiet"),  # removes the export's temporary copy
    "then:analysis_report": ("admin", "quiet"),  # removes the analysis export's temporary copies
    "change:Metric": ("admin", "refused"), "change:Scope": ("admin", "refused"),  # Evaluate views
    "change:Expert outcome": ("admin", "refused"),  # Analysis views ("change:Metric" there too)
    "change:Method": ("admin", "refused"), "change:Checkpoint panel": ("admin", "refused"),
    "change:Checkpoint": ("admin", "quiet"),  # Generate: the negative prompt box follows the family
    "click:Back to my studies": ("rater", "refused"),  # the rating screen back to the study list
    "change:session": ("admin", "quiet"),  # Studies: fills the tab after a sign-in; nothing unless admin
    "tick:2.0": ("admin", "quiet"),  # the demo project's progress, polled; hidden unless admin
}


@pytest.fixture(scope="module")
def served(tmp_path_factory):
    tmp = tmp_path_factory.mktemp("security")
    (tmp / "no-demo").mkdir()
    config = AppConfig(data_dir=tmp / "data", checkpoints_dir=tmp / "checkpoints", db_path=tmp / "study.db",
                       device="cpu", demo_dir=tmp / "no-demo")
    db = open_db(config.db_path)
    ids = add_images(db, tmp / "images")
    studies.create_account(db, "admin", "admin", ADMIN_PASSWORD)
    admin = studies.sign_in(db, "admin", ADMIN_PASSWORD)
    design = StudyDesign(mode="single", checkpoint_ids=tuple(ids), images_per_cell=1, size=64, seed=2)
    created = study_setup.create_study(db, config.data_dir, admin, "security", design,
                                       [study_setup.RaterSpec("rita", "rita-password")])
    study_store.set_study_audit(db, created.study_id, {"passed": True, "leaks": []})
    study_setup.open_study(db, admin, created.study_id)
    db.close()

    def tokens(role: str) -> str:
        """A fresh session of ``role`` per call: some events (sign-out, revoke) end the one they get."""
        if role == "anonymous":
            return ""
        with connect(config.db_path) as db:
            return studies.sign_in(db, *{"rater": ("rita", "rita-password"), "admin": ("admin", ADMIN_PASSWORD)}[role])

    # A demo build that fails at once: the admin's call must not start a real five-minute build here.
    app = create_app(config, demo=DemoBuild(Services(config), DemoSizes(real_per_label=0))).queue()
    app.launch(prevent_thread_lock=True, server_name="127.0.0.1", server_port=None, show_error=True, quiet=True)
    try:
        yield app.local_url, tokens, tmp
    finally:
        app.close()


def call(url: str, fn_index: int, data: list, timeout: float = 120, session: str | None = None) -> tuple[bool, object]:
    """(success, output data or error message) of one event, called as the browser calls it (``session``: its tab)."""
    session = session or secrets.token_hex(8)
    with httpx.Client(base_url=url, timeout=timeout) as http:
        joined = http.post("gradio_api/queue/join", json={"data": data, "fn_index": fn_index, "session_hash": session,
                                                           "event_data": None, "trigger_id": None})
        joined.raise_for_status()
        with http.stream("GET", "gradio_api/queue/data", params={"session_hash": session}) as stream:
            for line in stream.iter_lines():
                if not line.startswith("data:"):
                    continue
                message = json.loads(line[5:])
                if message.get("msg") == "process_completed":
                    output = message.get("output") or {}
                    if message.get("success"):
                        return True, output.get("data")
                    return False, str(output.get("error"))
    raise AssertionError(f"no answer from fn_index {fn_index}")


def _events(url: str) -> list[dict]:
    config = json.load(urllib.request.urlopen(f"{url}config"))
    components = {c["id"]: c for c in config["components"]}

    def name(component_id) -> str:
        props = components[component_id].get("props", {})
        return str(props.get("label") or props.get("value") or "")

    events = []
    for index, dep in enumerate(config["dependencies"]):
        if not dep.get("backend_fn"):
            continue  # runs in the browser only (the address-bar cleanup)
        api = dep.get("api_name")
        visible = dep.get("api_visibility") == "public"
        target, event = dep["targets"][0]
        if dep.get("trigger_after") is not None:
            parent = config["dependencies"][dep["trigger_after"]]
            trigger = f"then:{parent['api_name']}" if parent.get("api_name") in ("export_ratings", "analysis_report") else "then:"
        else:
            trigger = f"{event}:{name(target) if target in components else ''}"
        inputs = [components[i] for i in dep["inputs"]]
        events.append({"index": index, "key": api if visible else trigger, "named": visible, "inputs": inputs,
                       "outputs": [components[i] for i in dep["outputs"]]})
    return events


def _data(inputs: list[dict], token: str) -> list:
    values = []
    for component in inputs:
        props = component.get("props", {})
        if props.get("label") == "session" or props.get("storage_key") == "polypturing-session":
            values.append(token)
        elif component["type"] == "state":
            values.append(None)
        else:
            values.append(props.get("value"))
    return values


def test_the_role_table_names_every_endpoint(served):
    url, _, _ = served
    info = json.load(urllib.request.urlopen(f"{url}gradio_api/info"))
    assert {name.lstrip("/") for name in info["named_endpoints"]} == set(NAMED)
    hidden = {event["key"] for event in _events(url) if not event["named"]}
    assert hidden == set(HIDDEN), hidden ^ set(HIDDEN)


@pytest.mark.parametrize("role", ROLES)
def test_every_endpoint_checks_the_callers_role_first(served, role):
    import re

    url, tokens, tmp = served
    wrong = []
    for event in _events(url):
        needed, below = ((NAMED[event["key"]], "quiet" if event["key"] in QUIET_NAMED else "refused")
                         if event["named"] else HIDDEN[event["key"]])
        ok, answer = call(url, event["index"], _data(event["inputs"], tokens(role)))
        text = json.dumps(answer)
        allowed = ROLES.index(role) >= ROLES.index(needed)
        refused = not ok and re.search(REFUSAL.get(role, "^$"), text)
        if allowed and refused:
            wrong.append(f"{event['key']}: {role} refused: {text[:200]}")
        elif not allowed and below == "refused" and not refused:
            wrong.append(f"{event['key']}: {role} not refused: {ok} {text[:200]}")
        elif not allowed and below == "quiet" and not (ok and _gives_nothing(event, answer)):
            wrong.append(f"{event['key']}: {role} got {ok} {text[:200]}")
        if role != "admin" and str(tmp) in text:
            wrong.append(f"{event['key']}: a server path reached {role}: {text[:200]}")
    assert not wrong, "\n".join(wrong)


def _gives_nothing(event: dict, answer) -> bool:
    """A quiet refusal: no study remembered, no checkpoint listed, no file touched."""
    if event["key"] == "change:Study":
        return answer == [None]
    if event["key"] == "tick:2.0":
        return answer[0].get("visible") is False
    if event["key"] in ("then:", "analysis_studies", "change:session"):
        return answer[0].get("choices") in ([], None)
    if event["key"] == "change:Checkpoint":
        return answer == [{"__type__": "update"}]  # the negative prompt box left as it is
    return answer == [None]


def test_an_admin_signing_in_gets_the_checkpoint_names_and_no_paths(served):
    url, tokens, tmp = served
    event = next(e for e in _events(url) if e["key"] == "list_checkpoints")
    ok, answer = call(url, event["index"], [tokens("admin")])
    assert ok and answer[0]["choices"] == []  # the fixture's demo folder is empty; the names come from there
    with httpx.Client(base_url=url) as http:
        page = http.get("/").text + http.get("config").text
    assert str(tmp) not in page


def test_the_ratings_export_leaves_no_temporary_copy(served):
    import glob
    import tempfile

    url, tokens, _ = served
    events = {event["key"]: event for event in _events(url)}
    before = set(glob.glob(f"{tempfile.gettempdir()}/polyp-export-*"))
    tab, admin = secrets.token_hex(8), tokens("admin")
    study = next(c for c in events["export_ratings"]["inputs"] if c.get("props", {}).get("label") == "Study id")
    data = [admin if component.get("props", {}).get("label") == "session" else 1 if component is study else None
            for component in events["export_ratings"]["inputs"]]
    ok, answer = call(url, events["export_ratings"]["index"], data, session=tab)
    assert ok and answer[0]["path"].endswith("study-1-ratings.csv"), answer
    assert len(set(glob.glob(f"{tempfile.gettempdir()}/polyp-export-*")) - before) == 1
    # What the page runs next (the browser chains it): the copy goes, Gradio's content-hash-named cache copy stays.
    ok, _ = call(url, events["then:export_ratings"]["index"], [admin, None], session=tab)
    assert ok and set(glob.glob(f"{tempfile.gettempdir()}/polyp-export-*")) <= before
    with httpx.Client(base_url=url) as http:
        assert http.get(answer[0]["url"]).text.startswith("study_id,study_name")


def test_sign_in_over_http_is_throttled_per_client(served):
    """Last in this module: afterwards this client (127.0.0.1) must wait before signing in again."""
    from review import auth

    url, _, _ = served
    event = next(e for e in _events(url) if e["key"] == "sign_in")
    answers = [call(url, event["index"], [f"guess-{n}", "not-the-password"]) for n in range(auth.FREE_FAILURES["client"] + 2)]
    messages = [answer for ok, answer in answers if not ok]
    assert len(messages) == len(answers)
    assert "unknown username or wrong password" in messages[0]
    assert "too many failed sign-ins" in messages[-1]  # per client: every guess had another name
