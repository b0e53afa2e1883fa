"""Remote datasets: s3:// against a real moto server, http(s) SSRF guard, gridfs:// against SecantusDB."""

from __future__ import annotations

import http.server
import json
import threading
import urllib.parse
import zipfile
from pathlib import Path

import pytest

from pipeline.data import DataError, generate, load_dataset, write_coco
from pipeline.data import remote as remote_mod
from tests.dbserver import free_port, running_secantus

BUCKET = "datasets"


# --------------------------------------------------------------------------- fixtures


@pytest.fixture(autouse=True)
def _env(tmp_path, monkeypatch):
    monkeypatch.setenv("DREAMFORGE_CACHE", str(tmp_path / "cache"))
    for name in ("DREAMFORGE_ALLOW_PRIVATE_URLS", "DREAMFORGE_S3_ENDPOINT", "AWS_ENDPOINT_URL_S3", "AWS_ENDPOINT_URL",
                 "MONGODB_URI", "DREAMFORGE_DB", "STORAGE_EMULATOR_HOST", "DREAMFORGE_GCS_ENDPOINT"):
        monkeypatch.delenv(name, raising=False)
    # Credentials only from these variables: no ~/.aws files, no instance metadata.
    monkeypatch.setenv("AWS_ACCESS_KEY_ID", "testing")
    monkeypatch.setenv("AWS_SECRET_ACCESS_KEY", "testing")
    monkeypatch.setenv("AWS_DEFAULT_REGION", "us-east-1")
    monkeypatch.setenv("AWS_CONFIG_FILE", str(tmp_path / "no-aws-config"))
    monkeypatch.setenv("AWS_SHARED_CREDENTIALS_FILE", str(tmp_path / "no-aws-credentials"))
    monkeypatch.setenv("AWS_EC2_METADATA_DISABLED", "true")


@pytest.fixture(scope="module")
def moto_endpoint():
    from moto.server import ThreadedMotoServer

    port = free_port()
    server = ThreadedMotoServer(ip_address="127.0.0.1", port=port, verbose=False)
    server.start()
    yield f"http://127.0.0.1:{port}"
    server.stop()


@pytest.fixture
def s3(moto_endpoint, monkeypatch):
    """A boto3 client on the moto server with an empty bucket; the loader pointed at it."""
    import boto3

    monkeypatch.setenv("DREAMFORGE_S3_ENDPOINT", moto_endpoint)
    monkeypatch.setenv("DREAMFORGE_ALLOW_PRIVATE_URLS", "1")  # moto listens on loopback
    client = boto3.client("s3", endpoint_url=moto_endpoint, region_name="us-east-1")
    existing = {b["Name"] for b in client.list_buckets().get("Buckets", [])}
    if BUCKET in existing:
        for obj in client.list_objects_v2(Bucket=BUCKET).get("Contents", []):
            client.delete_object(Bucket=BUCKET, Key=obj["Key"])
    else:
        client.create_bucket(Bucket=BUCKET)
    return client


@pytest.fixture
def shelf(tmp_path):
    """A small real COCO folder (6 synthetic shelf images: 4 boxed, 1 counted, 1 clicked, so
    every remote source reads weak labels too) and a ZIP of it."""
    folder = write_coco(generate("retail-shelf", 6, seed=0, task="detect", counts=1, points=1), tmp_path / "shelf")
    archive = tmp_path / "shelf.zip"
    with zipfile.ZipFile(archive, "w", zipfile.ZIP_DEFLATED) as zf:
        for path in sorted(folder.rglob("*")):
            if path.is_file():
                zf.write(path, path.relative_to(folder).as_posix())
    return folder, archive


def _upload_folder(client, folder: Path, prefix: str) -> None:
    for path in sorted(folder.rglob("*")):
        if path.is_file():
            client.upload_file(str(path), BUCKET, f"{prefix}/{path.relative_to(folder).as_posix()}")


def _same(remote, local) -> None:
    def flat(ds):
        return {s.file_name: s for samples in ds.splits.values() for s in samples}

    assert {k: sorted(s.file_name for s in v) for k, v in remote.splits.items()} == {
        k: sorted(s.file_name for s in v) for k, v in local.splits.items()
    }
    for name, sample in flat(local).items():
        other = flat(remote)[name]
        assert other.target == sample.target and other.image.tobytes() == sample.image.tobytes()
        assert other.label_kind == sample.label_kind
        assert other.path.is_file()


def _no_downloads(monkeypatch):
    def refuse(*args, **kwargs):
        raise AssertionError("downloaded again although the cache is current")

    monkeypatch.setattr(remote_mod, "_copy", refuse)


# ---------------------------------------------------------------------------------- s3://


def test_s3_zip_loads_like_the_local_zip_and_is_cached(s3, shelf, monkeypatch):
    folder, archive = shelf
    s3.upload_file(str(archive), BUCKET, "zips/shelf.zip")
    remote = load_dataset(f"s3://{BUCKET}/zips/shelf.zip", "detect")
    assert remote.name == "shelf"
    assert {s.label_kind for s in remote.splits["train"]} == {"full", "counts", "points"}
    _same(remote, load_dataset(folder, "detect"))

    _no_downloads(monkeypatch)
    again = load_dataset(f"s3://{BUCKET}/zips/shelf.zip", "detect")
    assert again.splits["train"][0].path == remote.splits["train"][0].path


def test_s3_changed_object_is_downloaded_again(s3, shelf, tmp_path):
    folder, archive = shelf
    s3.upload_file(str(archive), BUCKET, "shelf.zip")
    first = remote_mod.fetch_remote(f"s3://{BUCKET}/shelf.zip")
    smaller = write_coco(generate("retail-shelf", 3, seed=1, task="detect"), tmp_path / "small")
    small_zip = tmp_path / "small.zip"
    with zipfile.ZipFile(small_zip, "w") as zf:
        for path in sorted(smaller.rglob("*")):
            if path.is_file():
                zf.write(path, path.relative_to(smaller).as_posix())
    s3.upload_file(str(small_zip), BUCKET, "shelf.zip")
    second = remote_mod.fetch_remote(f"s3://{BUCKET}/shelf.zip")
    assert second != first and second.read_bytes() == small_zip.read_bytes()
    assert not first.exists()  # the old version is dropped from the cache
    assert len(load_dataset(f"s3://{BUCKET}/shelf.zip", "detect", fractions=(1, 0, 0)).splits["train"]) == 3


@pytest.mark.parametrize("uri_suffix", ["folders/shelf", "folders/shelf/"])
def test_s3_folder_prefix_loads_like_the_local_folder_and_is_cached(s3, shelf, monkeypatch, uri_suffix):
    folder, _ = shelf
    _upload_folder(s3, folder, "folders/shelf")
    s3.put_object(Bucket=BUCKET, Key="folders/shelf-other/x.png", Body=b"not part of the dataset")
    remote = load_dataset(f"s3://{BUCKET}/{uri_suffix}", "detect")
    assert remote.name == "shelf"
    _same(remote, load_dataset(folder, "detect"))

    _no_downloads(monkeypatch)
    load_dataset(f"s3://{BUCKET}/{uri_suffix}", "detect")


def test_s3_oversize_object_is_refused_before_download(s3, shelf, monkeypatch):
    _, archive = shelf
    s3.upload_file(str(archive), BUCKET, "big.zip")
    monkeypatch.setattr(remote_mod, "MAX_REMOTE_BYTES", 1000)
    _no_downloads(monkeypatch)
    with pytest.raises(DataError, match=r"s3://datasets/big.zip: the object is [\d.]+ kB, over the 1.0 kB limit"):
        load_dataset(f"s3://{BUCKET}/big.zip", "detect")


def test_s3_oversize_folder_and_too_many_objects_are_refused(s3, shelf, monkeypatch):
    folder, _ = shelf
    _upload_folder(s3, folder, "f")
    monkeypatch.setattr(remote_mod, "MAX_REMOTE_OBJECTS", 3)
    with pytest.raises(DataError, match=r"s3://datasets/f: the folder has more than 3 objects"):
        load_dataset(f"s3://{BUCKET}/f", "detect")
    monkeypatch.setattr(remote_mod, "MAX_REMOTE_OBJECTS", 100)
    monkeypatch.setattr(remote_mod, "MAX_REMOTE_BYTES", 2000)
    with pytest.raises(DataError, match=r"s3://datasets/f: the folder is [\d.]+ kB, over the 2.0 kB limit"):
        load_dataset(f"s3://{BUCKET}/f", "detect")


def test_s3_missing_object_and_non_zip_are_clear_errors(s3):
    with pytest.raises(DataError, match=r"s3://datasets/nope.zip: no such object"):
        load_dataset(f"s3://{BUCKET}/nope.zip", "detect")
    s3.put_object(Bucket=BUCKET, Key="notes.txt", Body=b"hello")
    with pytest.raises(DataError, match=r"s3://datasets/notes.txt: not a ZIP archive"):
        load_dataset(f"s3://{BUCKET}/notes.txt", "detect")


def test_s3_folder_key_escaping_the_folder_is_refused(s3, shelf, tmp_path):
    folder, _ = shelf
    _upload_folder(s3, folder, "esc")
    s3.put_object(Bucket=BUCKET, Key="esc/images/../../../evil.png", Body=b"x")
    with pytest.raises(DataError, match=r"s3://datasets/esc: object .* outside the dataset folder"):
        load_dataset(f"s3://{BUCKET}/esc", "detect")
    assert not list(tmp_path.rglob("evil.png"))


def test_s3_endpoint_on_loopback_needs_the_allow_list(s3, shelf, monkeypatch):
    _, archive = shelf
    s3.upload_file(str(archive), BUCKET, "shelf.zip")
    monkeypatch.delenv("DREAMFORGE_ALLOW_PRIVATE_URLS")
    with pytest.raises(DataError, match=r"DREAMFORGE_S3_ENDPOINT=http://127.0.0.1:\d+ must use https://"):
        load_dataset(f"s3://{BUCKET}/shelf.zip", "detect")
    monkeypatch.setenv("DREAMFORGE_S3_ENDPOINT", "https://127.0.0.1:1")
    with pytest.raises(DataError, match=r"refused to connect to 127.0.0.1: it is a loopback address"):
        load_dataset(f"s3://{BUCKET}/shelf.zip", "detect")


# ----------------------------------------------------------------------- bad URIs, SSRF


@pytest.mark.parametrize(
    ("uri", "message"),
    [
        ("ftp://example.com/data.zip", "unsupported scheme 'ftp'"),
        ("http://example.com/data.zip", "unsupported scheme 'http'"),
        ("file:///etc/passwd", "unsupported scheme 'file'"),
        ("s3://user:secret@bucket/x.zip", "no user, port, query or fragment"),
        ("s3://bucket:9000/x.zip", "no user, port, query or fragment"),
        ("s3://bucket/x.zip?versionId=1", "no user, port, query or fragment"),
        ("s3://Bad_Bucket/x.zip", "not a valid bucket name"),
        ("s3://bucket/a/../../other/x.zip", "'.' or '..' segments"),
        ("gs://bucket//x.zip", "'.' or '..' segments"),
        ("https://user:pw@example.com/x.zip", "must not carry credentials"),
        ("gridfs://../../x", "expected gridfs://ID"),
    ],
)
def test_bad_remote_uris_are_refused(uri, message):
    with pytest.raises(DataError, match=message):
        remote_mod.fetch_remote(uri)


def test_file_uri_is_not_a_remote_dataset():
    with pytest.raises(DataError, match="not a folder, a .zip archive or a COCO .json file"):
        load_dataset("file:///etc/passwd", "detect")  # the local path, not a download
    with pytest.raises(DataError, match="unsupported scheme 'ftp'"):
        load_dataset("ftp://example.com/data.zip", "detect")


@pytest.mark.parametrize(
    ("url", "problem"),
    [
        ("https://127.0.0.1/x.zip", "loopback"),
        ("https://localhost/x.zip", "loopback"),  # resolved first, then checked
        ("https://[::1]/x.zip", "loopback"),
        ("https://[::ffff:127.0.0.1]/x.zip", "loopback"),
        ("https://169.254.169.254/latest/meta-data/", "link-local"),
        ("https://[fe80::1]/x.zip", "link-local"),
        ("https://10.0.0.1/x.zip", "private"),
        ("https://192.168.1.1/x.zip", "private"),
        ("https://172.16.0.1/x.zip", "private"),
        ("https://[fd00::1]/x.zip", "private"),
        ("https://0.0.0.0/x.zip", "unspecified"),
        ("https://224.0.0.1/x.zip", "multicast"),
    ],
)
def test_https_to_non_public_addresses_is_refused(url, problem):
    with pytest.raises(DataError, match=rf"refused to connect to .*it is (a|an|the) {problem}"):
        load_dataset(url, "detect")


def test_allow_list_admits_loopback_but_never_metadata(monkeypatch):
    monkeypatch.setenv("DREAMFORGE_ALLOW_PRIVATE_URLS", "1")
    for url in ("https://169.254.169.254/latest/meta-data/", "http://[fd00:ec2::254]/", "http://0.0.0.0/x.zip"):
        with pytest.raises(DataError, match="refused to connect"):
            load_dataset(url, "detect")
    assert remote_mod.address_problem("127.0.0.1", allow_private=True) is None
    assert remote_mod.address_problem("10.1.2.3", allow_private=True) is None
    assert remote_mod.address_problem("8.8.8.8") is None


class _Handler(http.server.BaseHTTPRequestHandler):
    routes: dict[str, tuple[int, dict[str, str], bytes]] = {}
    hits: list[str] = []

    def _answer(self, body: bool) -> None:
        self.hits.append(self.path)
        status, headers, payload = self.routes.get(self.path, (404, {}, b"not found"))
        self.send_response(status)
        for key, value in {"Content-Length": str(len(payload)), **headers}.items():
            self.send_header(key, value)
        self.end_headers()
        if body:
            self.wfile.write(payload)

    def do_GET(self):  # noqa: N802 - http.server's naming
        self._answer(True)

    def do_HEAD(self):  # noqa: N802
        self._answer(False)

    def log_message(self, *args):
        pass


@pytest.fixture
def web(shelf):
    _, archive = shelf
    _Handler.hits = []
    server = http.server.ThreadingHTTPServer(("127.0.0.1", 0), _Handler)
    base = f"http://127.0.0.1:{server.server_address[1]}"
    _Handler.routes = {
        "/shelf.zip": (200, {"ETag": '"v1"'}, archive.read_bytes()),
        "/moved.zip": (302, {"Location": "/shelf.zip"}, b""),
        "/to-metadata": (302, {"Location": "http://169.254.169.254/latest/meta-data/iam/"}, b""),
        "/to-file": (302, {"Location": "file:///etc/passwd"}, b""),
    }
    thread = threading.Thread(target=server.serve_forever, daemon=True)
    thread.start()
    yield base
    server.shutdown()
    server.server_close()


def test_http_on_loopback_loads_with_the_allow_list_and_is_cached(web, shelf, monkeypatch):
    with pytest.raises(DataError, match="unsupported scheme 'http'"):
        load_dataset(f"{web}/shelf.zip", "detect")
    monkeypatch.setenv("DREAMFORGE_ALLOW_PRIVATE_URLS", "1")
    remote = load_dataset(f"{web}/moved.zip", "detect")  # a redirect to loopback is fine here
    _same(remote, load_dataset(shelf[0], "detect"))
    _no_downloads(monkeypatch)
    load_dataset(f"{web}/moved.zip", "detect")


@pytest.mark.parametrize(
    ("path", "message"),
    [
        ("/to-metadata", r"refused to connect to 169.254.169.254: it is a link-local address.*after a redirect to "
                         r"http://169.254.169.254/latest/meta-data/iam/"),
        ("/to-file", r"redirected to file:///etc/passwd: only https and http are followed"),
    ],
)
def test_redirect_to_a_forbidden_target_is_refused_at_the_redirect(web, monkeypatch, path, message):
    monkeypatch.setenv("DREAMFORGE_ALLOW_PRIVATE_URLS", "1")  # so the first (loopback) hop is allowed
    with pytest.raises(DataError, match=rf"^{web}{path}: {message}"):
        load_dataset(f"{web}{path}", "detect")
    assert _Handler.hits and set(_Handler.hits) == {path}  # the loopback server saw only the first hop


def test_connector_checks_every_connection_not_only_the_first_url(web):
    # Bypass the up-front check: the first hop itself must be refused by the connector.
    fs = remote_mod._filesystem("http", allow_private=False, redirects=[])
    with pytest.raises(Exception) as caught:
        fs.info(f"{web}/shelf.zip")
    assert any(isinstance(c, remote_mod.UnsafeAddressError) for c in remote_mod._chain(caught.value))
    assert _Handler.hits == []  # no request reached the server


def test_http_download_over_the_limit_is_cut_off(web, monkeypatch):
    monkeypatch.setenv("DREAMFORGE_ALLOW_PRIVATE_URLS", "1")
    monkeypatch.setattr(remote_mod, "MAX_REMOTE_BYTES", 1000)
    with pytest.raises(DataError, match=rf"{web}/shelf.zip: the object is [\d.]+ kB, over the 1.0 kB limit"):
        remote_mod.fetch_remote(f"{web}/shelf.zip")


def test_presigned_query_is_not_echoed_in_errors(monkeypatch):
    with pytest.raises(DataError) as caught:
        load_dataset("https://10.0.0.1/x.zip?X-Amz-Signature=SECRET", "detect")
    assert "SECRET" not in str(caught.value)


class _FakeGcs(http.server.BaseHTTPRequestHandler):
    """The slice of the GCS JSON API that gcsfs uses to stat, list and read objects."""

    objects: dict[str, bytes] = {}  # "bucket/key" -> bytes
    downloads: list[str] = []

    def _meta(self, full: str) -> dict:
        bucket, key = full.split("/", 1)
        data = self.objects[full]
        return {"kind": "storage#object", "bucket": bucket, "name": key, "size": str(len(data)),
                "generation": str(hash(data) & 0xFFFF), "updated": "2026-01-01T00:00:00Z"}

    def _send(self, status: int, body: bytes, kind: str = "application/json") -> None:
        self.send_response(status)
        self.send_header("Content-Type", kind)
        self.send_header("Content-Length", str(len(body)))
        self.end_headers()
        self.wfile.write(body)

    def do_GET(self):  # noqa: N802
        url = urllib.parse.urlsplit(self.path)
        query = dict(urllib.parse.parse_qsl(url.query))
        parts = [urllib.parse.unquote(p) for p in url.path.split("/")]
        if url.path.startswith("/download/"):  # /download/storage/v1/b/BUCKET/o/KEY?alt=media
            full = f"{parts[5]}/{parts[7]}"
            self.downloads.append(full)
            data = self.objects[full]
            if self.headers.get("Range"):
                start, _, end = self.headers["Range"].split("=")[1].partition("-")
                data = data[int(start) : int(end) + 1 if end else None]
            return self._send(206 if self.headers.get("Range") else 200, data, "application/octet-stream")
        bucket = parts[4]
        if len(parts) > 6 and parts[6]:  # /storage/v1/b/BUCKET/o/KEY
            full = f"{bucket}/{parts[6]}"
            if full not in self.objects:
                return self._send(404, json.dumps({"error": {"code": 404, "message": "No such object"}}).encode())
            return self._send(200, json.dumps(self._meta(full)).encode())
        prefix, delimiter = query.get("prefix", ""), query.get("delimiter")
        items, prefixes = [], set()
        for full in sorted(self.objects):
            b, key = full.split("/", 1)
            if b != bucket or not key.startswith(prefix):
                continue
            rest = key[len(prefix) :]
            if delimiter and delimiter in rest:
                prefixes.add(prefix + rest.split(delimiter)[0] + delimiter)
            else:
                items.append(self._meta(full))
        self._send(200, json.dumps({"kind": "storage#objects", "items": items, "prefixes": sorted(prefixes)}).encode())

    def log_message(self, *args):
        pass


@pytest.fixture
def gcs(monkeypatch):
    _FakeGcs.objects, _FakeGcs.downloads = {}, []
    server = http.server.ThreadingHTTPServer(("127.0.0.1", 0), _FakeGcs)
    threading.Thread(target=server.serve_forever, daemon=True).start()
    monkeypatch.setenv("DREAMFORGE_GCS_ENDPOINT", f"http://127.0.0.1:{server.server_address[1]}")
    monkeypatch.setenv("DREAMFORGE_ALLOW_PRIVATE_URLS", "1")
    yield _FakeGcs.objects
    server.shutdown()
    server.server_close()


def test_gs_zip_and_folder_load_like_local_and_are_cached(gcs, shelf, monkeypatch):
    folder, archive = shelf
    gcs["bkt/zips/shelf.zip"] = archive.read_bytes()
    for path in sorted(folder.rglob("*")):
        if path.is_file():
            gcs[f"bkt/dirs/shelf/{path.relative_to(folder).as_posix()}"] = path.read_bytes()
    local = load_dataset(folder, "detect")
    _same(load_dataset("gs://bkt/zips/shelf.zip", "detect"), local)
    _same(load_dataset("gs://bkt/dirs/shelf", "detect"), local)
    count = len(_FakeGcs.downloads)
    load_dataset("gs://bkt/zips/shelf.zip", "detect")
    load_dataset("gs://bkt/dirs/shelf", "detect")
    assert len(_FakeGcs.downloads) == count  # both served from the cache
    with pytest.raises(DataError, match="gs://bkt/missing.zip: no such object"):
        load_dataset("gs://bkt/missing.zip", "detect")


def test_gcs_emulator_endpoint_is_checked(monkeypatch):
    monkeypatch.setenv("STORAGE_EMULATOR_HOST", "http://10.0.0.1:4443")
    with pytest.raises(DataError, match=r"gs://bucket/x.zip: STORAGE_EMULATOR_HOST=http://10.0.0.1:4443 must use https://"):
        load_dataset("gs://bucket/x.zip", "detect")
    monkeypatch.setenv("DREAMFORGE_GCS_ENDPOINT", "https://169.254.169.254")
    with pytest.raises(DataError, match=r"gs://bucket/x.zip: refused to connect to 169.254.169.254"):
        load_dataset("gs://bucket/x.zip", "detect")


# -------------------------------------------------------------------------------- gridfs://


@pytest.fixture(scope="module")
def mongo(tmp_path_factory):
    with running_secantus(tmp_path_factory.mktemp("secantus")) as uri:
        yield uri


def test_gridfs_round_trip(mongo, shelf, monkeypatch):
    import gridfs
    import pymongo

    folder, archive = shelf
    client = pymongo.MongoClient(mongo)
    try:
        bucket = gridfs.GridFSBucket(client["dreamforge"], bucket_name="datasets")
        file_id = bucket.upload_from_stream("shelf.zip", archive.read_bytes())
        # the API's uploads: the user's name in the metadata (any text: it becomes a plain file name)
        named_id = bucket.upload_from_stream("prj_x/ignored.zip", archive.read_bytes(), metadata={"name": "coins / 2024"})
    finally:
        client.close()
    monkeypatch.setenv("MONGODB_URI", mongo)
    remote = load_dataset(f"gridfs://{file_id}", "detect")
    _same(remote, load_dataset(folder, "detect"))
    # the dataset is known by the name it was uploaded under, not by its id
    assert remote.name == "shelf" and load_dataset(f"gridfs://{named_id}", "detect").name == "coins_2024"
    _no_downloads(monkeypatch)
    assert load_dataset(f"gridfs://{file_id}", "detect").splits["train"][0].path == remote.splits["train"][0].path


def test_gridfs_missing_id_and_missing_settings(mongo, monkeypatch):
    with pytest.raises(DataError, match="gridfs://0123456789abcdef01234567: set MONGODB_URI"):
        load_dataset("gridfs://0123456789abcdef01234567", "detect")
    monkeypatch.setenv("MONGODB_URI", mongo)
    with pytest.raises(DataError, match=r"gridfs://0123456789abcdef01234567: no dataset with id .* bucket 'datasets'"):
        load_dataset("gridfs://0123456789abcdef01234567", "detect")
    monkeypatch.setenv("DREAMFORGE_DB", "elsewhere")
    with pytest.raises(DataError, match="no dataset with id 'named-upload' .* database 'elsewhere'"):
        remote_mod.fetch_gridfs("gridfs://named-upload")
