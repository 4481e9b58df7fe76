"""The service under faults and hostile input, as a real server on 127.0.0.1:
a disk that fills up or runs out of file descriptors mid-job, numbers and
strings no job can use, unreadable job records, paths outside the allowed
folders, and a model that computes NaN."""

import json
import shutil
import subprocess
import sys
import time
import uuid
from pathlib import Path

import pytest
from safetensors.torch import load_file, save_file

from flipsketch.client import Client, ClientError

from .synthetic import write_clips
from .test_service import FAST, PNG, ROOT, Server, raw

FAULTY = [sys.executable, str(Path(__file__).with_name("faulty_disk.py"))]
EXE = shutil.which("flipsketch", path=str(Path(sys.executable).parent))
STROKE = {"points": [[0.2, 0.2], [0.8, 0.8]], "radius": 0.01, "opacity": 1.0}


def strokes(**change) -> dict:
    return {"schema": "flipsketch.strokes", "version": 1, "strokes": [{**STROKE, **change}]}


def post(server: Server, path: str, body: bytes | str) -> tuple[int, dict]:
    status, answer = raw(server, "POST", path, body.encode() if isinstance(body, str) else body)
    return status, json.loads(answer)  # every answer is JSON, errors included


def job_folders(jobs: Path) -> list[Path]:
    return [p for p in jobs.iterdir() if p.is_dir()]


def stream_states(client: Client, job_id: str) -> list[str]:
    """The job's state events until its final one (the stream must end)."""
    return [e["state"] for e in client.events(job_id) if e["type"] == "state"]


@pytest.fixture(scope="module")
def faulty(tiny_model_dir: Path, tmp_path_factory: pytest.TempPathFactory):
    jobs = tmp_path_factory.mktemp("faulty") / "jobs"
    running = Server(tiny_model_dir, jobs, launcher=FAULTY)
    running.jobs, running.flag = jobs, jobs.parent / f"fault-{jobs.name}"
    yield running
    running.stop()


@pytest.fixture(scope="module")
def server(tiny_model_dir: Path, tmp_path_factory: pytest.TempPathFactory):
    running = Server(tiny_model_dir, tmp_path_factory.mktemp("hostile") / "jobs")
    yield running
    running.stop()


def test_a_full_disk_refuses_a_submit_with_507_and_leaves_nothing(faulty: Server) -> None:
    before = job_folders(faulty.jobs)
    faulty.flag.write_text("ENOSPC files")  # the folder is made, its files are refused
    try:
        status, answer = post(faulty, "/v1/jobs", json.dumps({"params": FAST, "strokes": strokes()}))
    finally:
        faulty.flag.unlink()
    assert status == 507 and answer["error"]["message"].startswith(f"The disk is full: could not write '{faulty.jobs}")
    assert str(faulty.jobs) in answer["error"]["hint"]
    assert job_folders(faulty.jobs) == before  # no half-made folder
    assert faulty.client.wait(faulty.client.submit(FAST, sketch_png=PNG)["id"])["state"] == "done"


@pytest.mark.parametrize(("errno_name", "message"), [("ENOSPC", "The disk is full"), ("EMFILE", "Too many open files")])
def test_a_disk_fault_mid_job_fails_it_and_the_worker_goes_on(faulty: Server, errno_name: str, message: str) -> None:
    client = faulty.client
    running = client.submit({**FAST, "steps": 60, "align": False}, sketch_png=PNG)
    waiting = client.submit(FAST, sketch_png=PNG)
    for event in client.events(running["id"]):
        if event["type"] == "progress":
            faulty.flag.write_text(errno_name)  # results and the next job's state cannot be written
            break
    try:
        assert stream_states(client, running["id"])[-1] == "failed"  # the final event always comes
        assert stream_states(client, waiting["id"])[-1] == "failed"  # its "running" could not be recorded
        for job_id in (running["id"], waiting["id"]):
            error = client.job(job_id)["error"]
            assert error["message"].startswith(f"{message}: could not write '{faulty.jobs / job_id}")
    finally:
        faulty.flag.unlink()
    health = client.health()
    assert health["ok"] and health["worker"]["alive"]
    assert client.wait(client.submit(FAST, sketch_png=PNG)["id"])["state"] == "done"  # space is back
    for job_id in (running["id"], waiting["id"]):  # records refused by the disk are written once it takes them
        record = json.loads((faulty.jobs / job_id / "job.json").read_text())
        assert record["state"] == "failed" and message in record["error"]["message"]
        assert not (faulty.jobs / job_id / "result").exists()


def test_health_reports_the_worker_and_the_oldest_queued_job(server: Server) -> None:
    slow = server.client.submit({**FAST, "steps": 60, "align": False}, sketch_png=PNG)
    queued = server.client.submit(FAST, sketch_png=PNG)
    time.sleep(0.5)
    health = server.client.health()
    assert health["ok"] and health["worker"]["alive"] and health["queue"]["length"] >= 1
    assert 0.4 < health["queue"]["oldest_queued_s"] < 60
    assert server.client.wait(queued["id"])["state"] == "done" and server.client.job(slow["id"])["state"] == "done"
    health = server.client.health()
    assert health["queue"] == {"length": 0, "oldest_queued_s": None} and health["worker"]["running"] is None


PARAMS = json.dumps(FAST)[:-1]  # FAST without its closing brace: a field is appended as raw JSON text


@pytest.mark.parametrize(
    ("field_text", "field", "message"),
    [
        ('"guidance": NaN', "params.guidance", "is NaN"),
        ('"guidance": Infinity', "params.guidance", "is Infinity"),
        ('"guidance": -Infinity', "params.guidance", "is -Infinity"),
        ('"guidance": 1e400', "params.guidance", "is 1e400"),
        ('"guidance": 1e308', "params.guidance", "is 1e+308"),
        ('"align_lr": Infinity', "params.align_lr", "is Infinity"),
        ('"align_lr": NaN', "params.align_lr", "is NaN"),
        ('"align_lr": 0', "params.align_lr", "'align_lr' is 0"),
        ('"motion": NaN', "params.motion", "is NaN"),
        ('"align_iters": 1000000', "params.align_iters", "is 1000000"),
        ('"prompt": "\\ud800"', "params.prompt", "not valid UTF-8"),
        ('"negative_prompt": "a\\udfffb"', "params.negative_prompt", "not valid UTF-8"),
        ('"prompt": "' + "x" * 2001 + '"', "params.prompt", "2001 characters"),
        ('"loras": [{"path": "/x", "weight": NaN}]', "params.loras[0].weight", "is NaN"),
        ('"loras": [{"path": "/x", "weight": 1e9}]', "params.loras[0].weight", "1000000000"),
        ('"loras": [{"path": 5}]', "params.loras[0]", "'path' string"),
    ],
)
def test_non_finite_absurd_and_invalid_values_are_refused_naming_the_field(
    server: Server, field_text: str, field: str, message: str
) -> None:
    before = len(server.client.jobs())
    body = f'{{"params": {PARAMS}, {field_text}}}, "strokes": {json.dumps(strokes())}}}'
    got, answer = post(server, "/v1/jobs", body)
    assert got == 422 and answer["error"]["field"] == field and message in answer["error"]["message"], answer
    assert len(server.client.jobs()) == before  # nothing queued


@pytest.mark.parametrize(
    ("stroke", "field", "message"),
    [
        ({"radius": "x"}, "strokes.strokes[0].radius", "must hold numbers"),
        ({"radius": [0.01]}, "strokes.strokes[0].radius", "one number per point"),
        ({"radius": 2.0}, "strokes.strokes[0].radius", "within 0..0.5"),
        ({"opacity": "x"}, "strokes.strokes[0].opacity", "must hold numbers"),
        ({"opacity": [1.0]}, "strokes.strokes[0].opacity", "one number"),
        ({"opacity": True}, "strokes.strokes[0].opacity", "must hold numbers"),
        ({"points": [[0.1, "a"]]}, "strokes.strokes[0].points", "must hold numbers"),
        ({"points": [[0.1, 1e300]]}, "strokes.strokes[0].points", "within -100..101"),
        ({"points": {"x": 1}}, "strokes.strokes[0].points", "must hold numbers"),
        ({"points": [[[0.1, 0.2]]]}, "strokes.strokes[0].points", "[x, y] pairs"),
    ],
)
def test_wrong_stroke_fields_are_json_422_naming_the_field(server: Server, stroke, field, message) -> None:
    got, answer = post(server, "/v1/jobs", json.dumps({"params": FAST, "strokes": strokes(**stroke)}))
    assert got == 422 and answer["error"]["field"] == field and message in answer["error"]["message"], answer


def test_deep_nesting_and_wrong_types_are_json_errors(server: Server) -> None:
    cases = [
        ('{"params": ' + "[" * 100 + "]" * 100 + "}", 422, "params" + "[0]" * 31, "nested deeper than 32"),
        ("[" * 100_000 + "]" * 100_000, 400, None, "nested deeper than 32"),
        (json.dumps({"params": FAST, "strokes": strokes(), "fps": "ten"}), 422, "fps", "'fps'"),
        (json.dumps({"params": FAST, "strokes": strokes(), "segment": {"first_index": 10**12}}), 422, "segment", ""),
        (json.dumps({"params": FAST, "strokes": strokes(), "model": 5}), 422, "model", "must be a string"),
        (json.dumps({"params": FAST, "strokes": "x"}), 422, "strokes", "schema"),
        (json.dumps({"params": {**FAST, "align": "yes"}, "strokes": strokes()}), 422, "params.align", "must be bool"),
    ]
    for body, status, field, message in cases:
        got, answer = post(server, "/v1/jobs", body)
        assert got == status and answer["error"]["field"] == field and message in answer["error"]["message"], answer
    assert server.client.health()["ok"]


def test_model_and_subfolder_are_checked_at_submit(server: Server, tiny_model_dir: Path) -> None:
    cases = [
        ({"model": "../../../etc"}, "model", "is not a model folder on the server"),
        ({"model": str(tiny_model_dir), "subfolder": "../../../etc"}, "subfolder", "must be a folder inside"),
        ({"model": str(tiny_model_dir), "subfolder": "/etc"}, "subfolder", "must be a folder inside"),
        ({"model": str(tiny_model_dir), "subfolder": "unet"}, "model", "no model_index.json (in 'unet')"),
        ({"subfolder": "unet"}, "subfolder", "without 'model'"),
        ({"model": "owner/name", "revision": ["main"]}, "revision", "must be a string"),
    ]
    for extra, field, message in cases:
        got, answer = post(server, "/v1/jobs", json.dumps({"params": FAST, "strokes": strokes(), **extra}))
        assert got == 422 and answer["error"]["field"] == field and message in answer["error"]["message"], answer
    job = server.client.submit(FAST, sketch_png=PNG, model=str(tiny_model_dir))
    assert server.client.wait(job["id"])["state"] == "done"


@pytest.mark.parametrize(
    ("config", "field", "message"),
    [
        ('{"alpha": NaN}', "config.alpha", "is NaN"),
        ('{"alpha": 1e308}', "config.alpha", "'alpha' is 1e+308"),
        ('{"learning_rate": Infinity}', "config.learning_rate", "is Infinity"),
        ('{"caption_dropout": 1}', "config.caption_dropout", "is 1.0"),
        ('{"steps": 10000000000}', "config.steps", "is 10000000000"),
    ],
)
def test_training_options_are_finite_and_bounded(server: Server, tmp_path: Path, config, field, message) -> None:
    data = write_clips(tmp_path / "data", count=1)
    body = f'{{"data": {json.dumps(str(data))}, "out": {json.dumps(str(tmp_path / "lora"))}, "config": {config}}}'
    got, answer = post(server, "/v1/train", body)
    assert got == 422 and answer["error"]["field"] == field and message in answer["error"]["message"], answer
    assert not (tmp_path / "lora").exists()


def test_unreadable_records_are_skipped_and_half_made_jobs_removed_on_restart(
    tiny_model_dir: Path, tmp_path: Path
) -> None:
    jobs = tmp_path / "jobs"
    first = Server(tiny_model_dir, jobs)
    good = first.client.wait(first.client.submit(FAST, sketch_png=PNG)["id"])
    first.stop()
    record = json.loads((jobs / good["id"] / "job.json").read_text())
    surrogate, broken, half = (uuid.uuid4().hex for _ in range(3))
    for job_id, text in ((surrogate, json.dumps({**record, "id": surrogate, "params": {"prompt": "\ud800"}})),
                         (broken, '{"id": "' + broken + '", "state": ')):  # fmt: skip
        (jobs / job_id).mkdir()
        (jobs / job_id / "job.json").write_text(text)
    (jobs / half).mkdir()  # a submit that died before its record was written
    (jobs / half / "sketch.png").write_bytes(PNG)

    second = Server(tiny_model_dir, jobs)
    try:
        status, answer = raw(second, "GET", "/v1/jobs")
        listing = json.loads(answer)
        assert status == 200 and [j["id"] for j in listing["jobs"]] == [good["id"]]
        assert {s["id"] for s in listing["skipped"]} == {surrogate, broken}
        assert "UTF-8" in next(s["reason"] for s in listing["skipped"] if s["id"] == surrogate)
        assert not (jobs / half).exists()
        assert second.client.wait(second.client.submit(FAST, sketch_png=PNG)["id"])["state"] == "done"
        second.client.delete(surrogate)
        assert not (jobs / surrogate).exists() and len(json.loads(raw(second, "GET", "/v1/jobs")[1])["skipped"]) == 1
    finally:
        second.stop()


def test_allowed_paths_confine_requests_without_revealing_what_exists(tiny_model_dir: Path, tmp_path: Path) -> None:
    root = tmp_path / "allowed"
    data = write_clips(root / "data", count=1)
    outside = tmp_path / "outside"
    (outside / "clips").mkdir(parents=True)
    (outside / "clips" / "secret-name").mkdir()
    running = Server(tiny_model_dir, tmp_path / "jobs", "--allow-path", root)
    try:
        answers = []
        for path in (outside / "clips", tmp_path / "no-such-folder", "/etc", f"{root}/../outside/clips"):
            for body, field in (
                ({"data": str(path), "out": str(root / "lora")}, "data"),
                ({"data": str(data), "out": str(path)}, "out"),
            ):
                got, answer = post(running, "/v1/train", json.dumps(body))
                assert got == 422 and answer["error"]["field"] == field
                answers.append(answer["error"]["message"])
            body = {"params": FAST, "strokes": strokes(), "model": str(path)}
            got, answer = post(running, "/v1/jobs", json.dumps(body))
            assert got == 422 and answer["error"]["field"] == "model"
            answers.append(answer["error"]["message"])
            lora = {**FAST, "loras": [{"path": str(path)}]}
            got, answer = post(running, "/v1/jobs", json.dumps({"params": lora, "strokes": strokes()}))
            assert got == 422 and answer["error"]["field"] == "params.loras[0].path"
            answers.append(answer["error"]["message"])
        assert len(set(answers)) == 4  # data, out, model, LoRA: one message each, whatever exists
        assert all("outside the folders this server may use" in a for a in answers)
        assert not any("secret-name" in a or "exist" in a for a in answers)
        link = root / "link"
        link.symlink_to(outside, target_is_directory=True)  # a link out of the root is outside
        got, answer = post(running, "/v1/train", json.dumps({"data": str(link / "clips"), "out": str(root / "x")}))
        assert got == 422 and answer["error"]["field"] == "data"
        got, answer = post(running, "/v1/train", json.dumps({"data": str(root), "out": str(root / "lora")}))
        assert got == 202 and running.client.wait(answer["id"])["state"] == "failed"
        error = running.client.job(answer["id"])["error"]["message"]
        assert error == f"'{root}' has no caption for any of its 2 entries, so it holds no clips."  # none listed
    finally:
        running.stop()


@pytest.fixture(scope="module")
def nan_model(tiny_model_dir: Path, tmp_path_factory: pytest.TempPathFactory) -> Path:
    """A copy of the tiny model with one NaN weight, as in the repro case."""
    folder = tmp_path_factory.mktemp("nan") / "model"
    shutil.copytree(tiny_model_dir, folder)
    (weights,) = (folder / "unet").glob("*.safetensors")
    state = load_file(weights)
    state["conv_out.weight"] = state["conv_out.weight"].clone()
    state["conv_out.weight"].view(-1)[0] = float("nan")
    save_file(state, weights, metadata={"format": "pt"})
    return folder


def test_a_nan_model_fails_the_cli_and_the_job_with_what_to_do(server: Server, nan_model: Path, tmp_path) -> None:
    cli = [EXE, "animate", ROOT / "examples" / "cat.png", "--prompt", "the cat waves", "--model", nan_model]
    cli += ["--out", tmp_path / "run", "--frames", "4", "--steps", "3", "--width", "64", "--height", "64", "--no-align"]
    result = subprocess.run([str(c) for c in cli], capture_output=True, text=True, timeout=300)
    assert result.returncode == 2
    assert "The model produced NaN/Inf latents: damaged weights, or an fp16 overflow" in result.stderr
    assert "--dtype fp32" in result.stderr and not (tmp_path / "run").exists()

    good = server.client.submit(FAST, sketch_png=PNG)
    job = server.client.submit({**FAST, "align": False}, sketch_png=PNG, model=str(nan_model))
    assert server.client.wait(good["id"])["state"] == "done"
    done = server.client.wait(job["id"])
    assert done["state"] == "failed" and done["files"] == []
    assert "NaN/Inf latents" in done["error"]["message"] and "--dtype fp32" in done["error"]["hint"]
    jobs = server.ready.parent / "jobs"
    assert not (jobs / job["id"] / "result").exists()
    written = list(jobs.rglob("*.json"))
    assert len(written) >= 4 and not [p for p in written if not_strict(p.read_text())]  # every JSON written is strict


def not_strict(text: str) -> list[str]:
    """The NaN/Infinity literals in a JSON text (strict JSON has none)."""
    found: list[str] = []
    json.loads(text, parse_constant=found.append)
    return found


def test_training_never_touches_a_folder_that_is_not_a_run(server: Server, tmp_path: Path) -> None:
    data, out = write_clips(tmp_path / "data", count=1), tmp_path / "mine"
    (out / "checkpoints").mkdir(parents=True)
    (out / "checkpoints" / "notes.txt").write_text("mine")
    (out / "run.json").write_text("{}")
    for flags in ({}, {"overwrite": True}, {"resume": True}):
        with pytest.raises(ClientError) as refused:
            server.client.train(data, out, {"steps": 2, "resolution": 64, "frames": 4}, **flags)
        assert refused.value.status == 422 and refused.value.field == "out"
        assert refused.value.message == f"'{out}' is not empty and is not a FlipSketch training run."
    assert sorted(p.name for p in out.rglob("*")) == ["checkpoints", "notes.txt", "run.json"]
    assert (out / "run.json").read_text() == "{}"
