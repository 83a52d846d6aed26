"""Attack on the autouse ``_own_environment`` fixture (de665ff, tests/conftest.py): it puts
``os.environ`` back as it was before each test, so a session-scoped fixture that sets
variables and is started lazily (``request.getfixturevalue``, as the S3 parameters of
tests/storage/test_conformance.py and tests/services/test_prune_packs.py do) loses them
after its first test while its cached value lives on. The S3 fixtures' fake credentials
must be in place in every test that uses the bucket (the second one failed with 'no
usable S3 credentials' before tests/fixtures/s3.py set them again in every test once the
server runs; tests/storage/test_conformance.py's missing-bucket test failed alike)."""

from __future__ import annotations

import os

import pytest

from tests.fixtures.s3 import FAKE_ENV


@pytest.mark.parametrize("round_", [1, 2, 3])
def test_a_lazily_started_s3_server_keeps_its_credentials_in_every_test(
    request: pytest.FixtureRequest, round_: int
) -> None:
    from strongroom.storage.s3 import S3Storage

    endpoint, bucket = request.getfixturevalue("s3_bucket")
    for name, value in FAKE_ENV.items():
        assert os.environ.get(name) == value, (round_, name)
    storage = S3Storage(bucket, "p", endpoint_url=endpoint)
    storage.put("k", b"v")
    assert storage.get("k") == b"v"


def test_a_test_using_the_server_directly_after_a_lazy_start_has_credentials(
    moto_server: str,
) -> None:
    from strongroom.errors import StorageError
    from strongroom.storage.s3 import S3Storage

    for name, value in FAKE_ENV.items():
        assert os.environ.get(name) == value, name
    with pytest.raises(StorageError, match="does not exist"):
        S3Storage("no-such-bucket-strongroom", "p", endpoint_url=moto_server).get("k")
