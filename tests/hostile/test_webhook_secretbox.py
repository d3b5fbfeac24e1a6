"""Signing secrets at rest (issue 19, row 9), without a database: sealing, opening, rotation, bad keys;
and URLs that would smuggle a header into the request line."""

from __future__ import annotations

import pytest
from cryptography.fernet import Fernet

from api.webhooks.secretbox import PREFIX, SecretBox, SecretKeyError
from api.webhooks.urlguard import UrlRefusedError, parse_url
from core.settings import Settings

SECRET = bytes(range(32))


def test_a_sealed_secret_hides_the_key_and_opens_with_any_listed_key() -> None:
    old, new = Fernet.generate_key().decode(), Fernet.generate_key().decode()
    sealed = SecretBox([old]).seal(SECRET)
    assert sealed.startswith(PREFIX) and SECRET not in sealed
    rotated = SecretBox([new, old])
    assert rotated.open(sealed) == SECRET and rotated.needs_rewrap(sealed)
    resealed = rotated.seal(rotated.open(sealed))
    assert not rotated.needs_rewrap(resealed) and SecretBox([new]).open(resealed) == SECRET
    with pytest.raises(SecretKeyError, match="not in STAYLER_SECRET_KEYS"):
        SecretBox([new]).open(sealed)
    with pytest.raises(SecretKeyError, match="not set"):
        SecretBox([]).open(sealed)


def test_plaintext_secrets_still_sign_and_are_marked_for_encryption() -> None:
    assert SecretBox([]).seal(SECRET) == SECRET and SecretBox([]).open(SECRET) == SECRET
    assert not SecretBox([]).needs_rewrap(SECRET)
    keyed = SecretBox([Fernet.generate_key().decode()])
    assert keyed.open(SECRET) == SECRET and keyed.needs_rewrap(SECRET)


def test_a_malformed_key_is_refused_at_start() -> None:
    with pytest.raises(ValueError, match="STAYLER_SECRET_KEYS"):
        Settings.model_validate({"secret_keys": "not-a-key"})
    with pytest.raises(SecretKeyError):
        SecretBox.from_setting("c2hvcnQ=")


@pytest.mark.parametrize("url", ["http://a.example/x y", "http://a.example/\x00", "http://a.example:99999/",
                                 "http://u:p@a.example/", "gopher://a.example/"])
def test_urls_that_could_bend_the_request_are_refused(url: str) -> None:
    with pytest.raises(UrlRefusedError):
        parse_url(url)


def test_a_target_keeps_the_name_for_the_host_header() -> None:
    target = parse_url("https://Hooks.Example.com:8443/in?x=1")
    assert (target.host, target.port, target.path, target.host_header) == (
        "hooks.example.com", 8443, "/in?x=1", "hooks.example.com:8443")
    assert parse_url("http://[2001:db8::1]/").host_header == "[2001:db8::1]"
