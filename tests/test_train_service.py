"""LoRA training as a job of the real server: progress, cancel and resume,
results, and the warm model serving plain jobs unchanged afterwards."""

import json
from pathlib import Path

import pytest

from flipsketch.client import ClientError

from .synthetic import write_clips
from .test_service import FAST, PNG, Server, raw

CONFIG = {"rank": 4, "learning_rate": 1e-2, "resolution": 64, "frames": 4, "checkpoint_every": 2}


@pytest.fixture(scope="module")
def server(tiny_model_dir: Path, tmp_path_factory: pytest.TempPathFactory):
    running = Server(tiny_model_dir, tmp_path_factory.mktemp("train-service") / "jobs")
    yield running
    running.stop()


def frames_of(server: Server, job_id: str, dest: Path) -> list[bytes]:
    return [f.read_bytes() for f in sorted(server.client.download(job_id, dest)) if f.name.startswith("frame_")]


def test_training_job_reports_progress_and_its_lora_serves_jobs(server: Server, tmp_path: Path) -> None:
    data = write_clips(tmp_path / "data")
    before = server.client.wait(server.client.submit(FAST, sketch_png=PNG)["id"])
    job = server.client.train(data, tmp_path / "lora", {**CONFIG, "steps": 4, "validation_steps": 2})
    events = list(server.client.events(job["id"]))
    steps = [e for e in events if e["type"] == "progress" and e["stage"] == "train"]
    assert [e["step"] for e in steps] == [1, 2, 3, 4] and all(e["loss"] > 0 for e in steps)
    assert [e["state"] for e in events if e["type"] == "state"] == ["queued", "running", "done"]
    files = {f.name for f in server.client.download(job["id"], tmp_path / "result")}
    assert files == {
        "run.json", "adapter_config.json", "adapter_model.safetensors",
        "validation_animation.gif", "validation_contact_sheet.png",
    }  # fmt: skip
    assert json.loads((tmp_path / "result" / "run.json").read_text())["steps_done"] == 4

    styled = server.client.submit({**FAST, "loras": [{"path": str(tmp_path / "lora")}]}, sketch_png=PNG)
    after = server.client.wait(server.client.submit(FAST, sketch_png=PNG)["id"])
    assert server.client.wait(styled["id"])["state"] == "done"
    plain = frames_of(server, before["id"], tmp_path / "before")
    assert frames_of(server, after["id"], tmp_path / "after") == plain  # the warm model is the base again
    assert frames_of(server, styled["id"], tmp_path / "styled") != plain


def test_cancelled_training_resumes_from_its_checkpoint(server: Server, tmp_path: Path) -> None:
    data = write_clips(tmp_path / "data")
    config = {**CONFIG, "steps": 200, "validation_steps": 0}
    job = server.client.train(data, tmp_path / "lora", config)
    for event in server.client.events(job["id"]):
        if event["type"] == "progress" and event["step"] >= 3:
            server.client.cancel(job["id"])
    assert server.client.job(job["id"])["state"] == "cancelled"
    assert (tmp_path / "lora" / "checkpoints" / "step-000002").is_dir()

    with pytest.raises(ClientError) as refused:
        server.client.train(data, tmp_path / "lora", config)
    assert refused.value.status == 422 and refused.value.field == "out" and "--resume" in refused.value.hint
    resumed = server.client.train(data, tmp_path / "lora", {**config, "steps": 6}, resume=True)
    assert server.client.wait(resumed["id"])["state"] == "done"
    record = json.loads((tmp_path / "lora" / "run.json").read_text())
    assert record["steps_done"] == 6 and record["resumed_from"].endswith(("step-000002", "step-000004"))


@pytest.mark.parametrize(
    ("body", "field", "message"),
    [
        ({"out": "x"}, "data", "'data' is missing"),
        ({"data": "no-such-folder", "out": "x"}, "data", "does not exist"),
        ({"data": ".", "out": ""}, "out", "must name"),
        ({"data": ".", "out": "x", "config": {"ranks": 4}}, "config.ranks", "Unknown training option 'ranks'"),
        ({"data": ".", "out": "x", "config": {"steps": "many"}}, "config.steps", "'steps' must be int"),
        ({"data": ".", "out": "x", "config": {"rank": 0}}, "config.rank", "'rank' is 0"),
        ({"data": ".", "out": "x", "resume": "yes"}, "resume", "true or false"),
    ],
)
def test_bad_training_requests_name_the_field(server: Server, body: dict, field: str, message: str) -> None:
    status, answer = raw(server, "POST", "/v1/train", json.dumps(body).encode())
    error = json.loads(answer)["error"]
    assert status == 422 and error["field"] == field and message in error["message"]


def test_a_server_stopped_mid_training_says_how_to_continue(tiny_model_dir: Path, tmp_path: Path) -> None:
    data, jobs = write_clips(tmp_path / "data"), tmp_path / "jobs"
    config = {**CONFIG, "steps": 200, "validation_steps": 0}
    first = Server(tiny_model_dir, jobs)
    job = first.client.train(data, tmp_path / "lora", config)
    for event in first.client.events(job["id"]):
        if event["type"] == "progress" and event["step"] >= 3:
            break
    first.stop()  # SIGTERM mid-run
    second = Server(tiny_model_dir, jobs)
    try:
        error = second.client.job(job["id"])["error"]
        assert "stopped" in error["message"] and "resume" in error["hint"]
        resumed = second.client.train(data, tmp_path / "lora", {**config, "steps": 6}, resume=True)
        assert second.client.wait(resumed["id"])["state"] == "done"
        assert json.loads((tmp_path / "lora" / "run.json").read_text())["resumed_from"] is not None
    finally:
        second.stop()
