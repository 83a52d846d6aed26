from __future__ import annotations

import pytest

from strongroom.notify.base import check_http_url, describe_endpoint, scrub, url_secrets


def test_describe_endpoint_hides_path_query_and_credentials() -> None:
    assert (
        describe_endpoint("https://hooks.slack.com/services/T0/B0/abcdefSECRET")
        == "https://hooks.slack.com/…"
    )
    assert describe_endpoint("http://u:pw@[::1]:8080/x?token=1") == "http://[::1]:8080/…"
    assert describe_endpoint("http://host:notaport/") == "<invalid url>"


def test_check_http_url() -> None:
    check_http_url("https://example.com/hook", "URL")
    for bad in ("ftp://example.com/x", "example.com/x", "https:///path"):
        with pytest.raises(ValueError, match="must be an http"):
            check_http_url(bad, "URL")
    with pytest.raises(ValueError) as info:
        check_http_url("ftp://example.com/very-secret-path", "URL")
    assert "very-secret-path" not in str(info.value)


def test_scrub_removes_url_parts() -> None:
    url = "https://hooks.example.com/services/T0/B0/abcdefSECRET?key=qq-secret-qq"
    text = f"404 for {url} (path /services/T0/B0/abcdefSECRET, token abcdefSECRET)"
    out = scrub(text, url_secrets(url))
    assert "abcdefSECRET" not in out and "qq-secret-qq" not in out
    assert scrub("a\nb   c", ()) == "a b c"
    assert len(scrub("x" * 1000, ())) == 300
