"""``dreamforge serve``: a tiny trained model behind Moondream Station's REST API, started as a
real process and spoken to over HTTP, in the shapes Station's ``rest_server.py`` and Moondream's
client use."""

import base64
import contextlib
import io
import json
import os
import subprocess
import tarfile
import time
from concurrent.futures import ThreadPoolExecutor
from pathlib import Path

import httpx
import pytest
from PIL import Image

from dreamforge.auth import create_project
from dreamforge.local.stack import start_stack
from dreamforge.serve import answers
from dreamforge.serve.inputs import BadInput, read_image
from dreamforge.serve.model import resolve
from pipeline.codec import Codec
from tests.conftest import PY, ROOT, tiny_job_config
from tests.dbserver import free_port
from tests.service_helpers import api, wait_job

pytestmark = pytest.mark.slow

def env_for(home: Path) -> dict:
    return {**os.environ, "OMP_NUM_THREADS": "1", "DREAMFORGE_HOME": str(home), "PYTHONPATH": str(ROOT)}


@pytest.fixture(scope="module")
def stack(tmp_path_factory):
    s = start_stack(tmp_path_factory.mktemp("serve"), workers=1)
    yield s
    s.stop()


def run_job(stack, cfg: dict) -> str:
    """A tiny job, trained by the stack's worker into its artifacts folder; its id."""
    with api(stack) as c:
        r = c.post("/api/train", json={"config": cfg})
        assert r.status_code == 201, r.text
        job = wait_job(c, r.json()["jobId"], timeout=300)
    assert job["status"] == "succeeded", job["error"]
    return job["jobId"]


@pytest.fixture(scope="module")
def home(stack):
    return stack.home


@pytest.fixture(scope="module")
def job(stack):
    """A finished tiny detection job (with its 4-bit export)."""
    return run_job(stack, tiny_job_config())


class Server:
    def __init__(self, home: Path, *args: str) -> None:
        self.port = free_port()
        self.url = f"http://127.0.0.1:{self.port}"
        self.log = home / f"serve-{self.port}.log"
        cmd = [PY, "-m", "dreamforge.cli", "serve", *args, "--port", str(self.port)]
        self.proc = subprocess.Popen(cmd, cwd=ROOT, env=env_for(home), stdout=self.log.open("w"), stderr=subprocess.STDOUT)
        deadline = time.monotonic() + 120
        while time.monotonic() < deadline:
            assert self.proc.poll() is None, self.log.read_text()[-3000:]
            try:
                if httpx.get(self.url + "/health", timeout=1).status_code == 200:
                    return
            except httpx.HTTPError:
                time.sleep(0.2)
        raise AssertionError("dreamforge serve did not start: " + self.log.read_text()[-3000:])

    def post(self, skill: str, body, **kw) -> httpx.Response:
        return httpx.post(f"{self.url}/v1/{skill}", json=body, timeout=60, **kw)

    def stop(self) -> None:
        self.proc.terminate()
        self.proc.wait(timeout=20)


@pytest.fixture(scope="module")
def full(home, job):
    """The job's full model, by job id, with a 120 s batching window and a 1 MB body limit. The
    window is paid only while other requests are on their way, never by a lone one: every test
    on this server would time out otherwise."""
    s = Server(home, job, "--format", "full", "--batch-window-ms", "120000", "--max-body-mb", "1")
    s.job = job
    yield s
    s.stop()


@pytest.fixture(scope="module")
def quantized(home, job):
    """The job's 4-bit export, from its output folder, behind an API key."""
    s = Server(home, str(home / "artifacts" / job / "out"), "--format", "4bit", "--api-key", "sesame")
    yield s
    s.stop()


@pytest.fixture(scope="module")
def captioner(stack):
    """A tiny caption job's model (16-bit only: no 4-bit export to make)."""
    job = run_job(stack, tiny_job_config(task="caption", kind="medical-scan", export={"quantization": "none"}))
    s = Server(stack.home, job)
    s.job = job
    yield s
    s.stop()


@pytest.fixture(scope="module")
def segmenter(stack):
    job = run_job(stack, tiny_job_config(task="segment", kind="generic", export={"quantization": "none"}))
    s = Server(stack.home, job)
    yield s
    s.stop()


def data_url(image: Image.Image, fmt: str = "PNG", **save) -> str:
    b = io.BytesIO()
    image.save(b, fmt, **save)
    return f"data:image/{fmt.lower()};base64," + base64.b64encode(b.getvalue()).decode()


IMG = data_url(Image.new("RGB", (64, 48), (200, 30, 30)))
KEY = {"X-Moondream-Auth": "sesame"}


def assert_unit_box(o: dict) -> None:
    assert {"x_min", "y_min", "x_max", "y_max"} <= set(o)
    assert 0 <= o["x_min"] <= o["x_max"] <= 1 and 0 <= o["y_min"] <= o["y_max"] <= 1


# -- over HTTP -------------------------------------------------------------------------------


def test_health_and_models_in_station_shapes(full, quantized, job):
    h = httpx.get(full.url + "/health").json()
    assert h["status"] == "ok" and h["task"] == "detect" and h["quantized"] is False
    assert h["model"] == f"{job}/model"
    models = httpx.get(full.url + "/v1/models").json()["models"]
    assert [set(m) for m in models] == [{"id", "name", "description", "version"}]
    assert models[0]["version"] == "full" and "cola" in models[0]["description"]
    q = httpx.get(quantized.url + "/v1/models", headers=KEY).json()["models"][0]
    assert q["version"] == "4bit" and q["id"] == f"{job}/model-4bit"
    assert httpx.get(quantized.url + "/health").json()["quantized"] is True


@pytest.mark.parametrize("which", ["full", "quantized"])
def test_detect_and_point_answer_in_station_shapes(which, request):
    s = request.getfixturevalue(which)
    headers = KEY if which == "quantized" else {}
    before = httpx.get(s.url + "/health").json()["batching"]["images"]
    r = s.post("detect", {"image_url": IMG, "object": "Cola", "settings": {"max_objects": 2}}, headers=headers)
    assert r.status_code == 200, r.text
    assert set(r.json()) == {"objects"} and isinstance(r.json()["objects"], list)
    for o in r.json()["objects"]:
        assert_unit_box(o)
        assert o["label"] == "cola"
    r = s.post("point", {"image_url": IMG, "object": "cola"}, headers=headers)
    assert r.status_code == 200 and set(r.json()) == {"points"}
    for p in r.json()["points"]:
        assert 0 <= p["x"] <= 1 and 0 <= p["y"] <= 1
    assert httpx.get(s.url + "/health").json()["batching"]["images"] == before + 2  # the model ran


def test_detect_takes_several_images(full):
    r = full.post("detect", {"images": [IMG, IMG, IMG]})
    assert r.status_code == 200, r.text
    assert [set(x) for x in r.json()["results"]] == [{"objects"}] * 3


def test_skills_the_model_was_not_trained_for_are_refused(full):
    for skill in ("caption", "query", "segment"):
        r = full.post(skill, {"image_url": IMG, "question": "what?"})
        assert r.status_code == 422, r.text
        assert r.json() == {"error": f"this model was trained for detect, so it cannot {skill}; it answers /v1/detect, /v1/point"}
    r = full.post("reason", {"image_url": IMG})
    assert r.status_code == 404 and "/v1/detect" in r.json()["error"]


def test_a_caption_model_captions_and_streams_and_refuses_to_detect(captioner):
    r = captioner.post("caption", {"image_url": IMG, "length": "normal"})
    assert r.status_code == 200, r.text
    assert set(r.json()) == {"caption"} and isinstance(r.json()["caption"], str)
    with httpx.stream("POST", captioner.url + "/v1/caption", json={"image_url": IMG, "stream": True}, timeout=60) as r:
        assert r.status_code == 200 and r.headers["content-type"].startswith("text/event-stream")
        events = [json.loads(line[len("data: "):]) for line in r.iter_lines() if line.startswith("data: ")]
    assert events[-1] == {"completed": True}
    assert "".join(e["chunk"] for e in events[:-1]) == captioner.post("caption", {"image_url": IMG}).json()["caption"]
    for skill in ("detect", "point", "query"):
        r = captioner.post(skill, {"image_url": IMG, "object": "cola"})
        assert r.status_code == 422
        assert r.json()["error"] == f"this model was trained for caption, so it cannot {skill}; it answers /v1/caption"


@pytest.mark.parametrize("which", ["full", "captioner"])
def test_the_model_cards_curl_example_runs_against_the_server(which, request, home, tmp_path):
    s = request.getfixturevalue(which)
    job = s.job
    card = (home / "artifacts" / job / "out" / "MODEL_CARD.md").read_text()
    assert "`dreamforge serve JOB_ID`" in card and 'md.vl(endpoint="http://localhost:2020/v1")' in card
    curl = card.split("```bash\n", 1)[1].split("```", 1)[0].replace("localhost:2020", f"127.0.0.1:{s.port}")
    Image.new("RGB", (32, 32), (9, 9, 200)).save(tmp_path / "photo.jpg")
    res = subprocess.run(["bash", "-c", curl], cwd=tmp_path, capture_output=True, text=True, timeout=60)
    assert res.returncode == 0, res.stderr
    answer = json.loads(res.stdout)
    assert set(answer) == ({"caption"} if which == "captioner" else {"objects"}), answer


def test_a_segmentation_model_segments_detects_and_points(segmenter):
    r = segmenter.post("segment", {"image_url": IMG})
    assert r.status_code == 200, r.text
    seg = r.json()
    assert set(seg) == {"path", "bbox"}
    if seg["path"]:  # a tiny model may find nothing; what it finds is a closed relative path and its box
        assert seg["path"].startswith("M ") and seg["path"].endswith(" Z")
        assert_unit_box(seg["bbox"])
    else:
        assert seg["bbox"] is None
    for skill, key in (("detect", "objects"), ("point", "points")):
        r = segmenter.post(skill, {"image_url": IMG})
        assert r.status_code == 200 and set(r.json()) == {key}
    r = segmenter.post("caption", {"image_url": IMG})
    assert r.status_code == 422 and r.json()["error"].endswith("it answers /v1/detect, /v1/point, /v1/segment")
    r = segmenter.post("segment", {"images": [IMG]})
    assert r.status_code == 400 and "no image_url" in r.json()["error"]


def test_unknown_object_names_the_known_ones(full):
    r = full.post("detect", {"image_url": IMG, "object": "dog"})
    assert r.status_code == 400
    assert r.json()["error"] == "object 'dog' is not a category this model knows; it knows: cola, water, chips, soap"


def test_bad_input_is_a_4xx_naming_the_problem(full):
    # a 1-bit PNG compresses 60 M pixels into a few kB: refused from its header, never decoded
    bomb = data_url(Image.new("1", (10_000, 6_000)), optimize=True)
    cases = [
        ({"image_url": "https://example.com/cat.jpg"}, 400, "image_url must be a data URL"),
        ({"image_url": "data:image/png;base64,%%%"}, 400, "not valid base64"),
        ({"image_url": "data:image/png;base64," + base64.b64encode(b"hello").decode()}, 400, "not an image"),
        ({"image_url": bomb}, 413, "decompression bomb"),
        ({"images": [IMG, "nope"]}, 400, "images[1] must be a data URL"),
        ({"object": "cola"}, 400, "no image_url"),
        ({"image_url": IMG, "settings": {"max_objects": 0}}, 400, "settings.max_objects"),
        ({"image_url": IMG, "object": 3}, 400, "object must be a category name"),
        ({"image_url": "data:image/png;base64," + "A" * (1_100_000)}, 413, "more than this server's"),
    ]
    for body, status, words in cases:
        r = full.post("detect", body)
        assert r.status_code == status and words in r.json()["error"], (body if len(str(body)) < 200 else words, r.text)
    r = httpx.post(full.url + "/v1/detect", content=b"{not json", timeout=10)
    assert r.status_code == 400 and "not JSON" in r.json()["error"]
    assert httpx.get(full.url + "/health").status_code == 200  # and it still serves


def test_api_key_is_checked_against_x_moondream_auth(quantized):
    assert httpx.get(quantized.url + "/health").status_code == 200  # open, as Station's is
    for headers in ({}, {"X-Moondream-Auth": "wrong"}):
        for r in (quantized.post("detect", {"image_url": IMG}, headers=headers),
                  httpx.get(quantized.url + "/v1/models", headers=headers)):  # fmt: skip
            assert r.status_code == 401
            assert r.json() == {"error": "missing or wrong API key: send it in the X-Moondream-Auth header"}
    assert quantized.post("detect", {"image_url": IMG}, headers=KEY).status_code == 200


def test_concurrent_requests_share_forward_passes(full):
    before = httpx.get(full.url + "/health").json()["batching"]
    with ThreadPoolExecutor(8) as pool:
        rs = list(pool.map(lambda _: full.post("detect", {"image_url": IMG}), range(8)))
    assert all(r.status_code == 200 for r in rs)
    after = httpx.get(full.url + "/health").json()["batching"]
    assert after["images"] - before["images"] == 8
    assert after["batches"] - before["batches"] < 8


def test_a_lone_request_does_not_wait_out_the_batching_window(full):
    before = httpx.get(full.url + "/health").json()["batching"]
    for _ in range(2):  # one after the other: nothing else is on its way, so nothing to wait for
        assert full.post("detect", {"image_url": IMG}).status_code == 200  # in under 60 s
    after = httpx.get(full.url + "/health").json()["batching"]
    assert (after["batches"] - before["batches"], after["images"] - before["images"]) == (2, 2)


def test_a_job_id_serves_its_released_model(home, job):
    out = home / "artifacts" / job / "out"
    release = json.loads((out / "metrics.json").read_text())["evaluation"]["release"]["release_format"]
    expected = out / ("model" if release == "16-bit" else "model-4bit")
    assert resolve(job, home / "artifacts") == expected
    assert resolve(str(out / "model"), home / "artifacts") == out / "model"
    with pytest.raises(FileNotFoundError, match="job_nope: neither a model folder nor a job"):
        resolve("job_nope", home / "artifacts")
    res = subprocess.run([PY, "-m", "dreamforge.cli", "serve", "job_nope"], cwd=ROOT, env=env_for(home),
                         capture_output=True, text=True, timeout=60)  # fmt: skip
    assert res.returncode == 1 and "job_nope: neither a model folder nor a job" in res.stderr
    assert "Traceback" not in res.stderr


def test_artifacts_route_lists_the_models_and_how_to_serve_them(stack, db, job):
    out = stack.home / "artifacts" / job / "out"
    release = json.loads((out / "metrics.json").read_text())["evaluation"]["release"]
    with api(stack) as c:
        r = c.get(f"/api/jobs/{job}/artifacts")
        assert r.status_code == 200, r.text
        body = r.json()
        assert body["jobId"] == job and body["serve"] == f"dreamforge serve {job}"
        by_name = {a["name"]: a for a in body["artifacts"]}
        assert set(by_name) == {"model", "model-4bit", "metrics.json", "MODEL_CARD.md"}
        assert by_name["model"]["format"] == "16-bit" and by_name["model-4bit"]["format"] == "nf4"
        assert by_name["model"]["kind"] == "model" and by_name["MODEL_CARD.md"]["kind"] == "file"
        for name in ("model", "model-4bit"):
            files = [f for f in (out / name).rglob("*") if f.is_file()]
            assert by_name[name]["files"] == len(files) and by_name[name]["bytes"] == sum(f.stat().st_size for f in files)
        assert by_name["metrics.json"]["bytes"] == (out / "metrics.json").stat().st_size
        # the released one is the one `dreamforge serve JOB` serves
        assert [a["name"] for a in body["artifacts"] if a["released"]] == [resolve(job, stack.home / "artifacts").name]
        assert by_name["model-4bit"]["released"] == (release["release_format"] == "nf4")
        queued = c.post("/api/train", json={"config": tiny_job_config(seed=3)}).json()["jobId"]
        c.post(f"/api/jobs/{queued}/cancel")
        r = c.get(f"/api/jobs/{queued}/artifacts")
        assert r.status_code == 409 and "listed once it has succeeded" in r.json()["detail"]
    _, other = create_project(db, "other-list")
    with api(stack, other) as theirs:
        assert theirs.get(f"/api/jobs/{job}/artifacts").status_code == 404


def test_try_it_answers_with_the_served_model_over_the_api(stack, db, job, full):
    """The dashboard's "Try it": the API starts `dreamforge serve` for the job's model and forwards
    Station's body; the answer is the one the same server gives directly."""
    noisy = Image.frombytes("RGB", (900, 800), os.urandom(900 * 800 * 3))  # ~2 MB: over the API's usual body cap
    big = data_url(noisy)
    assert len(big) > 2 << 20
    with api(stack) as c:
        r = c.post(f"/api/jobs/{job}/try/detect", json={"image_url": IMG, "format": "full"}, timeout=300)
        assert r.status_code == 200 and r.json() == full.post("detect", {"image_url": IMG}).json(), r.text
        body = {"image_url": big, "settings": {"max_objects": 2}, "format": "full"}
        r = c.post(f"/api/jobs/{job}/try/detect", json=body, timeout=120)
        assert r.status_code == 200 and isinstance(r.json()["objects"], list) and len(r.json()["objects"]) <= 2, r.text
        r = c.post(f"/api/jobs/{job}/try/point", json={"image_url": IMG, "format": "full"}, timeout=120)
        assert r.status_code == 200 and r.json() == full.post("point", {"image_url": IMG}).json()
        # the server's own sentences come back as the API's errors
        r = c.post(f"/api/jobs/{job}/try/caption", json={"image_url": IMG})
        assert r.status_code == 422 and "trained for detect, so it cannot caption" in r.json()["detail"]
        r = c.post(f"/api/jobs/{job}/try/detect", json={"image_url": "data:image/png;base64,bm90IGFuIGltYWdl"})
        assert r.status_code == 400 and "image_url" in r.json()["detail"], r.text
        r = c.post(f"/api/jobs/{job}/try/detect", json={"image_url": IMG, "object": "unicorn"})
        assert r.status_code == 400 and "it knows:" in r.json()["detail"]
        queued = c.post("/api/train", json={"config": tiny_job_config(seed=5)}).json()["jobId"]
        c.post(f"/api/jobs/{queued}/cancel")
        r = c.post(f"/api/jobs/{queued}/try/detect", json={"image_url": IMG})
        assert r.status_code == 409 and "once it has succeeded" in r.json()["detail"]
    # one model server at a time, started once per model and kept while it is used
    logs = sorted((stack.home / "logs" / "serve").glob(f"serve-{job}-*.log"))
    assert len(logs) == 2, logs  # the full model, then the release (a request without "format")
    _, other = create_project(db, "other-try")
    with api(stack, other) as theirs:
        r = theirs.post(f"/api/jobs/{job}/try/detect", json={"image_url": IMG})
        assert r.status_code == 404 and str(stack.home) not in r.text


@contextlib.contextmanager
def in_thread(app):
    """``app`` under uvicorn on a loopback port, in this process; its URL."""
    import asyncio
    import threading

    import uvicorn

    port = free_port()
    server = uvicorn.Server(uvicorn.Config(app, host="127.0.0.1", port=port, log_level="warning"))
    thread = threading.Thread(target=lambda: asyncio.run(server.serve()), daemon=True)
    thread.start()
    deadline = time.monotonic() + 30
    while not server.started:
        assert time.monotonic() < deadline, "uvicorn did not start"
        time.sleep(0.05)
    try:
        yield f"http://127.0.0.1:{port}"
    finally:
        server.should_exit = True
        thread.join(10)


def test_one_endpoint_serves_every_jobs_model_to_its_project_and_try_it_goes_through_it(stack, db, job, home, full,
                                                                                        quantized):  # fmt: skip
    """Modal's `serve` (dreamforge.serve.jobs): /jobs/JOB/v1/… is Station's API for that job's
    released model, behind the project's key; with DREAMFORGE_SERVE_URL the API's Try it asks it."""
    from dreamforge.api.app import create_app
    from dreamforge.serve.jobs import JobsServer
    from dreamforge.settings import Settings

    settings = Settings(mongodb_uri=stack.uri, home=home)
    released = resolve(job, home / "artifacts").name  # what `dreamforge serve JOB` serves
    by = {"model": (full, {}), "model-4bit": (quantized, {"X-Moondream-Auth": "sesame"})}[released]
    expected = by[0].post("detect", {"image_url": IMG}, headers=by[1]).json()
    _, other = create_project(db, "other-endpoint")
    with in_thread(JobsServer(settings)) as url:
        ask = lambda path, key, body=None: httpx.post(f"{url}/jobs/{path}", json=body or {"image_url": IMG},  # noqa: E731
                                                      headers={"X-Moondream-Auth": key}, timeout=120)  # fmt: skip
        r = ask(f"{job}/v1/detect", stack.dev_key)
        assert r.status_code == 200 and r.json() == expected, r.text
        health = httpx.get(f"{url}/jobs/{job}/health", headers={"X-Moondream-Auth": stack.dev_key}).json()
        assert health["task"] == "detect" and health["model"].startswith(job)
        assert ask(f"{job}/v1/caption", stack.dev_key).status_code == 422  # Station's own refusal, passed on
        assert ask(f"{job}/v1/detect", "dfk_wrong").status_code == 401
        assert ask(f"{job}/v1/detect", other).status_code == 404  # another project's job is not found
        assert ask("job_nope/v1/detect", stack.dev_key).status_code == 404
        with in_thread(create_app(Settings(mongodb_uri=stack.uri, home=home / "elsewhere", serve_url=url))) as api_url:
            with httpx.Client(base_url=api_url, headers={"Authorization": f"Bearer {stack.dev_key}"}, timeout=120) as c:
                r = c.post(f"/api/jobs/{job}/try/detect", json={"image_url": IMG})  # no artifacts on this API's disk
                assert r.status_code == 200 and r.json() == expected, r.text
                r = c.post(f"/api/jobs/{job}/try/caption", json={"image_url": IMG})
                assert r.status_code == 422 and "cannot caption" in r.json()["detail"]


def test_a_model_downloads_as_a_tar_and_resumes_from_a_range(stack, db, job, tmp_path):
    out = stack.home / "artifacts" / job / "out"
    with api(stack) as c:
        r = c.get(f"/api/jobs/{job}/artifacts/model-4bit")
        assert r.status_code == 200, r.text
        whole = r.content
        assert r.headers["content-type"] == "application/x-tar" and int(r.headers["content-length"]) == len(whole)
        assert r.headers["accept-ranges"] == "bytes" and f'filename="{job}-model-4bit.tar"' in r.headers["content-disposition"]
        with tarfile.open(fileobj=io.BytesIO(whole)) as tar:
            tar.extractall(tmp_path, filter="data")
        for f in (out / "model-4bit").iterdir():
            assert (tmp_path / f"{job}-model-4bit" / f.name).read_bytes() == f.read_bytes()
        # an interrupted download resumes where it stopped, and the pieces make the same archive
        cut = len(whole) // 3
        r = c.get(f"/api/jobs/{job}/artifacts/model-4bit", headers={"Range": f"bytes={cut}-"})
        assert r.status_code == 206 and r.headers["content-range"] == f"bytes {cut}-{len(whole) - 1}/{len(whole)}"
        assert whole[:cut] + r.content == whole
        r = c.get(f"/api/jobs/{job}/artifacts/model-4bit", headers={"Range": "bytes=-100"})
        assert r.status_code == 206 and r.content == whole[-100:]
        r = c.get(f"/api/jobs/{job}/artifacts/model-4bit", headers={"Range": f"bytes={len(whole)}-"})
        assert r.status_code == 416 and r.headers["content-range"] == f"bytes */{len(whole)}"
        # a file comes as itself, ranges too
        r = c.get(f"/api/jobs/{job}/artifacts/metrics.json", headers={"Range": "bytes=0-9"})
        assert r.status_code == 206 and r.content == (out / "metrics.json").read_bytes()[:10]
        r = c.get(f"/api/jobs/{job}/artifacts/weights.bin")
        assert r.status_code == 404 and "it has: model, model-4bit, metrics.json, MODEL_CARD.md" in r.json()["detail"]
    _, other = create_project(db, "other-download")
    with api(stack, other) as theirs:
        assert theirs.get(f"/api/jobs/{job}/artifacts/model").status_code == 404


def test_pull_downloads_the_model_and_resumes_an_interrupted_pull(stack, job, tmp_path):
    env = {**env_for(stack.home), "DREAMFORGE_URL": stack.api_url, "DREAMFORGE_API_KEY": stack.dev_key}

    def pull(*args):
        return subprocess.run([PY, "-m", "dreamforge.cli", "pull", job, *args], cwd=ROOT, env=env,
                              capture_output=True, text=True, timeout=120)  # fmt: skip

    out = stack.home / "artifacts" / job / "out"
    res = pull("--format", "full", "-o", str(tmp_path / "a"))
    assert res.returncode == 0, res.stderr
    folder = Path(res.stdout.strip())
    assert folder == tmp_path / "a" / f"{job}-model"
    assert sorted(f.name for f in folder.iterdir()) == sorted(f.name for f in (out / "model").iterdir())
    assert (folder / "model.safetensors").read_bytes() == (out / "model" / "model.safetensors").read_bytes()
    assert f"serve it: dreamforge serve {folder}" in res.stderr
    assert resolve(str(folder), stack.home / "artifacts") == folder  # what it prints, `serve` takes
    # a pull that stopped a third of the way through continues from there
    with api(stack) as c:
        whole = c.get(f"/api/jobs/{job}/artifacts/model-4bit").content
    (tmp_path / "b").mkdir()
    (tmp_path / "b" / f"{job}-model-4bit.tar.part").write_bytes(whole[: len(whole) // 3])
    res = pull("--format", "4bit", "-o", str(tmp_path / "b"))
    assert res.returncode == 0, res.stderr
    assert f"resuming {job}-model-4bit.tar.part from byte {len(whole) // 3}" in res.stderr
    got = tmp_path / "b" / f"{job}-model-4bit"
    for f in (out / "model-4bit").iterdir():
        assert (got / f.name).read_bytes() == f.read_bytes()
    assert not list((tmp_path / "b").glob("*.part"))
    res = pull("--format", "adapter")
    assert res.returncode == 1 and "trained no LoRA adapters" in res.stderr and "pull --format full" in res.stderr
    res = subprocess.run([PY, "-m", "dreamforge.cli", "pull", "job_nope"], cwd=ROOT, env=env, capture_output=True, text=True, timeout=60)
    assert res.returncode == 1 and "job job_nope not found" in res.stderr and "Traceback" not in res.stderr


def test_pull_adapter_brings_the_lora_adapters_that_made_the_released_model(stack, tmp_path):
    """A LoRA job's adapters, alone: over the model they name, merged, they are its released weights."""
    import torch
    from peft import PeftModel

    from dreamforge.serve.model import load_codec
    from pipeline.device import pick_device
    from pipeline.models.loading import ensure_tokens, load_model

    job = run_job(stack, tiny_job_config(warm_start={"enabled": False}, rl={"enabled": False},
                                         domain={"lora": True, "lora_r": 4, "lr": 0.01},
                                         export={"quantization": "none"}))  # fmt: skip
    env = {**env_for(stack.home), "DREAMFORGE_URL": stack.api_url, "DREAMFORGE_API_KEY": stack.dev_key}
    with api(stack) as c:
        kinds = {a["name"]: a["kind"] for a in c.get(f"/api/jobs/{job}/artifacts").json()["artifacts"]}
    assert kinds["adapter"] == "adapter" and kinds["model"] == "model"
    res = subprocess.run([PY, "-m", "dreamforge.cli", "pull", job, "--format", "adapter", "-o", str(tmp_path)],
                         cwd=ROOT, env=env, capture_output=True, text=True, timeout=120)  # fmt: skip
    assert res.returncode == 0, res.stderr
    folder = Path(res.stdout.strip())
    assert folder == tmp_path / f"{job}-adapter"
    base = json.loads((folder / "adapter_config.json").read_text())["base_model_name_or_path"]
    assert f"PeftModel.from_pretrained(base, {str(folder)!r})" in res.stderr and base in res.stderr
    released = stack.home / "artifacts" / job / "out" / "model"
    model, processor = load_model(Path(base), pick_device())
    ensure_tokens(model, processor, load_codec(released).special_tokens())
    untouched = {k: v.clone() for k, v in model.state_dict().items()}
    merged = PeftModel.from_pretrained(model, folder).merge_and_unload().state_dict()
    want = load_model(released, pick_device())[0].state_dict()
    adapted = [k for k in want if k.endswith("q_proj.weight") and "language_model" in k]
    assert adapted and all(not torch.equal(untouched[k], want[k]) for k in adapted)  # LoRA changed them
    for k in adapted:
        assert torch.allclose(merged[k], want[k], atol=1e-5), k


# -- the answer shapes, on targets the real codec decodes --------------------------------------


def decoded(task: str, text: str, w: int = 64, h: int = 32) -> dict:
    target, ok = Codec(task, ["cola", "soap"], num_bins=32, max_objects=4).decode(text, w, h)
    assert ok
    return target


def test_detections_are_image_relative_and_filtered():
    t = decoded("detect", "cola<loc_0><loc_0><loc_7><loc_15>;soap<loc_16><loc_8><loc_31><loc_31>;cola<loc_8><loc_16><loc_15><loc_31>")
    assert answers.detections(t, "cola") == [
        {"x_min": 0.0, "y_min": 0.0, "x_max": 0.25, "y_max": 0.5, "label": "cola"},
        {"x_min": 0.25, "y_min": 0.5, "x_max": 0.5, "y_max": 1.0, "label": "cola"},
    ]
    assert [d["label"] for d in answers.detections(t, None)] == ["cola", "soap", "cola"]
    assert len(answers.detections(t, None, max_objects=1)) == 1
    assert answers.points(t, "soap") == [{"x": 0.75, "y": 0.625, "label": "soap"}]
    assert answers.pick_category(["cola", "soap"], " SOAP ") == "soap"
    assert answers.pick_category(["cola", "soap"], None) is None


def test_segment_answers_an_svg_path_and_its_box():
    t = decoded("segment", "cola<loc_0><loc_0><loc_15><loc_15><loc_0><loc_0><loc_31><loc_0><loc_0><loc_31>")
    seg = answers.segment(t, "cola")
    assert seg["bbox"] == {"x_min": 0.0, "y_min": 0.0, "x_max": 0.5, "y_max": 0.5}
    assert seg["path"] == "M 0 0 L 1 0 L 0 1 Z"
    assert answers.segment(t, "soap") == {"path": "", "bbox": None}


def test_read_image_turns_exif_rotated_photos_upright():
    im = Image.new("RGB", (40, 20), (10, 200, 10))
    exif = Image.Exif()
    exif[0x0112] = 6  # stored sideways: shown turned 90°
    got = read_image("image_url", data_url(im, "JPEG", exif=exif.tobytes()))
    assert got.size == (20, 40) and got.mode == "RGB"
    with pytest.raises(BadInput, match="a data URL needs ';base64,'"):
        read_image("image_url", "data:image/png,abc")


def test_byte_ranges_ignore_what_they_cannot_serve_and_refuse_past_the_end():
    from dreamforge.api.tarball import byte_range

    assert byte_range("bytes=0-9", 100) == (0, 9)
    assert byte_range("bytes=90-500", 100) == (90, 99)
    assert byte_range("bytes=-500", 100) == (0, 99)
    for whole in (None, "", "bytes=0-1,5-6", "items=0-5", "bytes=x-5", "bytes=-"):
        assert byte_range(whole, 100) is None, whole
    for bad in ("bytes=100-", "bytes=9-3", "bytes=-0"):
        with pytest.raises(ValueError):
            byte_range(bad, 100)
