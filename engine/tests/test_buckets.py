"""djangoops.buckets: the bucket of an s3 repository created and versioned with its owner's
keys, and the server's key proven append-only the way a thief would try it, the canary
removed whatever the outcome; a key that may delete is refused, and said so."""

import io
import json

import pytest
from djangoops import buckets, s3

DENIED = s3.S3Error("AccessDenied: Access Denied", code="AccessDenied", status=403)


class World:
    """One bucket and what each key may do in it: the owner anything, the server what
    SERVER_MAY allows (a set of "delete", "delete_version", "versioning")."""

    def __init__(self, exists=True, status="Enabled", server_may=(), server_writes=True):
        self.exists, self.status = exists, status
        self.server_may, self.server_writes = set(server_may), server_writes
        self.objects = {}  # key -> [version ids]
        self.log = []

    def client(self, url, access_key, secret_key):
        return Key(self, url, "owner" if access_key == "owner-id" else "server")


class Key:
    def __init__(self, world, url, who):
        self.world, self.who = world, who
        self.where = s3.location(url)

    def _may(self, what):
        self.world.log.append((self.who, what))
        if self.who == "server" and what not in self.world.server_may:
            raise DENIED

    def exists(self):
        return self.world.exists

    def versioning(self):
        return self.world.status if self.world.exists else ""  # (as moto answers)

    def request(self, method, key="", query=(), body=b"", headers=None):
        if method == "PUT" and not query and not key:
            self._may("create")
            self.world.exists = True
        elif dict(query).get("versioning") == "":
            self._may("versioning")
            self.world.status = "Suspended" if b"Suspended" in body else "Enabled"
        return b""

    def enable_versioning(self):
        self.request("PUT", query=[("versioning", "")], body=b"<Status>Enabled</Status>")

    def put(self, key, data):
        if self.who == "server" and not self.world.server_writes:
            raise DENIED
        self.world.objects.setdefault(key, []).insert(0, f"v{len(self.world.log)}")

    def delete(self, key, version_id=None):
        self._may("delete_version" if version_id else "delete")
        if version_id:
            self.world.objects[key].remove(version_id)
            if not self.world.objects[key]:
                del self.world.objects[key]
        else:
            self.world.objects[key].insert(0, "marker")

    def versions(self, key):
        return list(self.world.objects.get(key, []))


@pytest.fixture
def settings(tmp_path):
    (tmp_path / "admin.s3").write_text("AWS_ACCESS_KEY_ID=owner-id\nAWS_SECRET_ACCESS_KEY=owner-secret\n")
    (tmp_path / "server.s3").write_text("AWS_ACCESS_KEY_ID=server-id\nAWS_SECRET_ACCESS_KEY=server-secret\n")
    return {
        "repository": "bucket",
        "url": "s3:http://10.0.0.5:5000/web1",
        "admin_keys": str(tmp_path / "admin.s3"),
        "server_keys": str(tmp_path / "server.s3"),
        "check_only": False,
    }


def test_a_new_bucket_is_created_versioned_and_proven_append_only(settings):
    world = World(exists=False, status="")
    changed, lines = buckets.set_up(settings, client=world.client, token="t")
    assert changed
    assert lines == [
        "bucket: created bucket web1",
        "bucket: versioning turned on",
        "bucket: the server's key is append-only (it wrote; deleting, deleting a version and suspending "
        "versioning were refused)",
    ]
    assert world.status == "Enabled"
    assert world.objects == {}  # the canary is gone, every version
    assert ("server", "delete") in world.log and ("server", "delete_version") in world.log
    assert ("server", "versioning") in world.log


def test_a_bucket_set_up_already_changes_nothing(settings):
    changed, lines = buckets.set_up(settings, client=World().client, token="t")
    assert not changed
    assert lines[0] == "bucket: versioning is on"


@pytest.mark.parametrize(
    ("may", "said"),
    [
        ({"delete"}, "can delete an object in bucket web1"),
        ({"delete_version"}, "can delete an object's version in bucket web1"),
        ({"versioning"}, "can suspend the bucket's versioning in bucket web1"),
    ],
)
def test_a_server_key_that_may_delete_is_refused(settings, tmp_path, may, said):
    world = World(server_may=may)
    path = tmp_path / "settings.json"
    path.write_text(json.dumps(settings))
    out = io.StringIO()
    assert buckets.main([str(path)], client=world.client, out=out) == 1
    report = json.loads(out.getvalue())
    assert said in report["lines"][-1] and "it is not append-only" in report["lines"][-1]
    assert world.status == "Enabled"  # put back when the key could suspend it
    assert world.objects == {}


def test_a_server_key_that_cannot_write_is_refused(settings):
    with pytest.raises(buckets.BucketError, match="the server's key cannot write to the bucket"):
        buckets.set_up(settings, client=World(server_writes=False).client, token="t")


def test_check_mode_looks_and_changes_nothing(settings):
    world = World(exists=False, status="")
    changed, lines = buckets.set_up({**settings, "check_only": "True"}, client=world.client)
    assert not changed and not world.exists and world.log == []
    assert lines == ["bucket: bucket web1 does not exist; it would be created, versioned"]
    world = World(status="Suspended")
    assert buckets.set_up({**settings, "check_only": True}, client=world.client)[1] == [
        "bucket: versioning is Suspended; it would be turned on"
    ]
    assert world.status == "Suspended"


def test_a_failure_never_shows_a_secret(settings, tmp_path):
    def leaky(url, access_key, secret_key):
        raise s3.S3Error(f"SignatureDoesNotMatch for {secret_key}")

    path = tmp_path / "settings.json"
    path.write_text(json.dumps(settings))
    out = io.StringIO()
    assert buckets.main([str(path)], client=leaky, out=out) == 1
    assert "owner-secret" not in out.getvalue() and "[redacted]" in out.getvalue()


def test_versioning_that_does_not_stick_is_an_error(settings):
    class Stubborn(World):
        def client(self, url, access_key, secret_key):
            key = super().client(url, access_key, secret_key)
            key.enable_versioning = lambda: None
            return key

    with pytest.raises(buckets.BucketError, match="versioning could not be turned on"):
        buckets.set_up(settings, client=Stubborn(status="").client, token="t")
