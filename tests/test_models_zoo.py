"""Packages from the bioimage.io zoo: the real download code against a server on 127.0.0.1
serving packages the tests make — by id, by address of the description or of a .zip, by Zenodo
DOI — and what happens when the checksum is wrong, the download is cut short or the server
fails."""

from __future__ import annotations

import hashlib
import http.server
import io
import json
import threading
import zipfile
from pathlib import Path

import pytest
import torch
import yaml

from microseg.errors import DataError
from microseg.models import ModelConfig, build_model, zoo
from microseg.transfer.loading import OUR_ARCHITECTURE, load_pretrained


class _Server:
    """Files from a dict ``{path: bytes}`` on 127.0.0.1; ``broken`` paths answer 500,
    ``truncated`` ones promise more bytes than they send. Every request is recorded."""

    def __init__(self):
        self.files: dict[str, bytes] = {}
        self.broken: set[str] = set()
        self.truncated: set[str] = set()
        self.requests: list[str] = []
        outer = self

        class Handler(http.server.BaseHTTPRequestHandler):
            def do_GET(self):  # noqa: N802 (the standard library's name)
                outer.requests.append(self.path)
                body = outer.files.get(self.path)
                if self.path in outer.broken:
                    self.send_error(500, "Internal Server Error")
                elif body is None:
                    self.send_error(404, "Not Found")
                else:
                    self.send_response(200)
                    self.send_header("Content-Length", str(len(body)))
                    self.end_headers()
                    self.wfile.write(body[:len(body) // 2] if self.path in outer.truncated
                                     else body)
                    self.close_connection = True

            def log_message(self, *args):
                pass

        self.httpd = http.server.ThreadingHTTPServer(("127.0.0.1", 0), Handler)
        self.url = f"http://127.0.0.1:{self.httpd.server_address[1]}"
        self.thread = threading.Thread(target=self.httpd.serve_forever, daemon=True)
        self.thread.start()

    def close(self):
        self.httpd.shutdown()
        self.httpd.server_close()


@pytest.fixture()
def server():
    served = _Server()
    yield served
    served.close()


@pytest.fixture()
def cache(tmp_path, monkeypatch):
    folder = tmp_path / "cache"
    monkeypatch.setenv("MICROSEG_CACHE", str(folder))
    return folder


def _package(config: ModelConfig, seed: int = 0, sha256: str | None = None
             ) -> tuple[dict[str, bytes], dict]:
    """The files of a package with microseg's architecture: ``{name: bytes}`` and its
    state dict; ``sha256`` replaces the true checksum in the description."""
    torch.manual_seed(seed)
    state = build_model(config).state_dict()
    buffer = io.BytesIO()
    torch.save(state, buffer)
    weights = buffer.getvalue()
    rdf = {"format_version": "0.5.4", "type": "model", "name": "test nuclei",
           "weights": {"pytorch_state_dict": {
               "source": "weights.pt",
               "sha256": sha256 or hashlib.sha256(weights).hexdigest(),
               "architecture": {"callable": OUR_ARCHITECTURE[1], "import_from": OUR_ARCHITECTURE[0],
                                "kwargs": config.to_dict()}},
               "onnx": {"source": "model.onnx", "sha256": "0" * 64}}}
    return {"rdf.yaml": yaml.safe_dump(rdf).encode(), "weights.pt": weights}, state


def _serve(server: _Server, prefix: str, files: dict[str, bytes]) -> str:
    for name, body in files.items():
        server.files[f"{prefix}/{name}"] = body
    return f"{server.url}{prefix}/rdf.yaml"


CONFIG = ModelConfig(channels=(4, 8), strides=(2,), num_res_units=1, out_classes=3)


def _same_weights(model, state) -> bool:
    return all(torch.equal(model.state_dict()[k], v) for k, v in state.items())


def test_a_zoo_model_by_id_is_downloaded_once_checked_and_loaded(server, cache, monkeypatch):
    files, state = _package(CONFIG)
    _serve(server, "/artifacts/tiny-nucleus/files", files)
    monkeypatch.setenv("MICROSEG_BIOIMAGEIO_URL", server.url + "/artifacts/{id}/files/rdf.yaml")
    loaded = load_pretrained("bioimage.io:tiny-nucleus")
    assert loaded.kind == "bioimageio" and loaded.config == CONFIG
    assert _same_weights(loaded.model, state)
    assert sorted(server.requests) == ["/artifacts/tiny-nucleus/files/rdf.yaml",
                                       "/artifacts/tiny-nucleus/files/weights.pt"], \
        "the description and the loadable weights only (not the onnx file)"
    folder = Path(loaded.source)
    assert folder.parent == cache / "models" and folder.name.startswith("tiny-nucleus-")
    assert json.loads((folder / "source.json").read_text())["files"] == {
        "weights.pt": hashlib.sha256(files["weights.pt"]).hexdigest()}
    server.requests.clear()
    server.files.clear()  # the second time needs no server
    assert _same_weights(load_pretrained("bioimage.io:tiny-nucleus").model, state)
    assert server.requests == []
    assert [(r["source"], r["folder"]) for r in zoo.cached_packages()] == [
        ("bioimage.io:tiny-nucleus", str(folder))]


def test_an_address_of_a_description_or_of_a_zip_works_too(server, cache):
    files, state = _package(CONFIG, seed=1)
    url = _serve(server, "/models/a", files)
    assert _same_weights(load_pretrained(url).model, state)
    packed = io.BytesIO()
    with zipfile.ZipFile(packed, "w") as archive:
        for name, body in files.items():
            archive.writestr(name, body)
    server.files["/models/b/package.zip"] = packed.getvalue()
    loaded = load_pretrained(server.url + "/models/b/package.zip")
    assert _same_weights(loaded.model, state)
    assert {p.name for p in Path(loaded.source).iterdir()} >= {"rdf.yaml", "weights.pt"}


def test_a_zenodo_doi_finds_the_description_among_the_record_files(server, cache, monkeypatch):
    files, state = _package(CONFIG, seed=2)
    links = {}
    for name, body in files.items():
        server.files[f"/records/77/files/{name}/content"] = body
        links[name] = f"{server.url}/records/77/files/{name}/content"
    record = {"files": [{"key": k, "links": {"self": v}} for k, v in links.items()]}
    server.files["/api/records/77"] = json.dumps(record).encode()
    monkeypatch.setenv("MICROSEG_ZENODO_URL", server.url + "/api/records/{record}")
    assert zoo.is_remote("10.5281/zenodo.77") and zoo.is_remote("doi:10.5281/zenodo.77")
    assert _same_weights(load_pretrained("doi:10.5281/zenodo.77").model, state)


def test_a_wrong_checksum_is_refused_and_nothing_is_kept(server, cache):
    files, _ = _package(CONFIG, sha256="ab" * 32)
    url = _serve(server, "/models/c", files)
    with pytest.raises(DataError, match=r"weights\.pt downloaded from .* sha256 differs") as err:
        load_pretrained(url)
    assert "declared " + "ab" * 32 in str(err.value)
    assert list((cache / "models").iterdir()) == [], "no package, no partial download"


def test_a_truncated_download_is_refused_and_nothing_is_kept(server, cache):
    files, state = _package(CONFIG)
    url = _serve(server, "/models/d", files)
    server.truncated.add("/models/d/weights.pt")
    size = len(files["weights.pt"])
    with pytest.raises(DataError, match=f"stopped after {size // 2:,} of {size:,} bytes"):
        zoo.fetch_package(url, progress=False)
    assert list((cache / "models").iterdir()) == []
    server.truncated.clear()  # the next attempt succeeds
    assert _same_weights(load_pretrained(url).model, state)


def test_a_failing_server_and_an_unknown_id_say_what_happened(server, cache, monkeypatch):
    files, _ = _package(CONFIG)
    url = _serve(server, "/models/e", files)
    server.broken.add("/models/e/weights.pt")
    with pytest.raises(DataError, match=r"weights\.pt failed with HTTP 500.*try again later"):
        zoo.fetch_package(url, progress=False)
    monkeypatch.setenv("MICROSEG_BIOIMAGEIO_URL", server.url + "/artifacts/{id}/files/rdf.yaml")
    with pytest.raises(DataError, match="HTTP 404.*check the id"):
        zoo.fetch_package("bioimage.io:no-such-model", progress=False)
    server.close()
    with pytest.raises(DataError, match="check the network connection"):
        zoo.fetch_package(server.url + "/models/f/rdf.yaml", progress=False)
    assert list((cache / "models").iterdir()) == []


def test_a_description_that_is_not_a_model_is_refused(server, cache):
    server.files["/x/rdf.yaml"] = yaml.safe_dump({"type": "dataset", "name": "cells"}).encode()
    with pytest.raises(DataError, match="describes a 'dataset', not a model"):
        zoo.fetch_package(server.url + "/x/rdf.yaml", progress=False)
    files, _ = _package(CONFIG)
    rdf = yaml.safe_load(files["rdf.yaml"])
    rdf["weights"] = {"onnx": {"source": "model.onnx"}}
    server.files["/y/rdf.yaml"] = yaml.safe_dump(rdf).encode()
    with pytest.raises(DataError, match="(?s)no weights microseg can read.*formats in it: onnx"):
        zoo.fetch_package(server.url + "/y/rdf.yaml", progress=False)


def test_the_command_line_lists_downloaded_packages(server, cache, capsys):
    from microseg.__main__ import main

    files, _ = _package(CONFIG)
    url = _serve(server, "/models/h", files)
    zoo.fetch_package(url, progress=False)
    assert main(["models"]) == 0
    out = capsys.readouterr().out
    assert f"downloaded packages ({cache / 'models'})" in out and url in out


def test_remote_names_are_told_from_paths_and_built_in_names():
    assert zoo.is_remote("bioimage.io:affable-shark")
    assert zoo.is_remote("https://example.org/m/rdf.yaml")
    assert not any(zoo.is_remote(s) for s in ("nuclei", "runs/a/models/unet", Path("x"), None,
                                              "10.5281/other.1"))


def test_a_package_given_where_a_model_folder_is_needed_says_where_it_goes(server, cache):
    from microseg.errors import MicrosegError
    from microseg.models import TrainedModel

    files, _ = _package(CONFIG)
    url = _serve(server, "/models/g", files)
    with pytest.raises(MicrosegError, match="bioimage.io package, not a model folder.*notebook 03 or 04"):
        TrainedModel.load(url)
