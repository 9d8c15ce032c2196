"""What schemathesis found the schema did not say, each checked against /openapi.json: bodies that cannot be
parsed are a documented 400, an empty upload a documented 422, `"collection": ""` is taken wherever the
schema allows it, and a 405 names every method the path takes."""
import pytest
from fastapi.testclient import TestClient

from rag.service.server import create_app

QUESTION = "Who did Anthropic hire to lead its infrastructure effort?"


@pytest.fixture()
def client(settings, pipeline, tmp_path):
    with TestClient(create_app(settings.with_overrides(data_dir=tmp_path / "data"), pipeline=pipeline)) as c:
        yield c


def documented(client, method: str, path: str) -> set[int]:
    return {int(s) for s in client.get("/openapi.json").json()["paths"][path][method.lower()]["responses"]}


def test_a_body_that_is_not_utf8_or_not_multipart_is_a_documented_status(client):
    r = client.post("/ask", content=b'{"question": "\xff\xfe"}', headers={"content-type": "application/json"})
    assert r.status_code == 400 and r.status_code in documented(client, "POST", "/ask")
    assert client.put("/collections/team").status_code == 201
    r = client.post("/collections/team/documents", content=b"--xx\r\nbroken",
                    headers={"content-type": "multipart/form-data; boundary=xx"})
    assert r.status_code in documented(client, "POST", "/collections/{name}/documents"), r.status_code


def test_an_empty_upload_is_a_documented_422_that_says_why(client):
    assert client.put("/collections/team").status_code == 201
    r = client.post("/collections/team/documents", files={"file": ("a.txt", b"")})
    assert r.status_code == 422 and "holds no text" in r.json()["detail"]
    assert 422 in documented(client, "POST", "/collections/{name}/documents")


@pytest.mark.parametrize("path", ["/ask", "/collections/default/ask"])
def test_an_empty_collection_in_the_body_means_the_one_asked(client, path):
    r = client.post(path, json={"question": QUESTION, "collection": ""})
    assert r.status_code == 200 and r.json()["answer"] == "Eric Boyd"


@pytest.mark.parametrize("method, path, allowed", [
    ("POST", "/collections/team", "DELETE, PUT"),
    ("PATCH", "/collections/team/documents", "GET, POST"),
    ("GET", "/ask", "POST"),
])
def test_a_405_names_every_method_the_path_takes(client, method, path, allowed):
    r = client.request(method, path)
    assert r.status_code == 405 and r.headers["allow"] == allowed
