"""aifb.endpoints.scrub: the one secret redaction of error texts (postgres, redis, s3, vector)."""

from aifb.endpoints import scrub


def test_scrub_replaces_every_occurrence_of_each_secret():
    assert scrub("pw hunter2 and hunter2 again", "hunter2") == "pw *** and *** again"
    assert scrub("key AKIAXYZ secret s3cr3t", "AKIAXYZ", "s3cr3t") == "key *** secret ***"


def test_scrub_takes_any_object_and_ignores_missing_secrets():
    assert scrub(ValueError("bad hunter2"), None, "", "hunter2") == "bad ***"
    assert scrub(b"x", None) == "b'x'"


def test_scrub_one_line_and_min_len():
    assert scrub("a\n  b\thunter2", "hunter2", one_line=True) == "a b ***"
    assert scrub("a\n b", "zz") == "a\n b"
    assert scrub("the abc key", "abc", min_len=4) == "the abc key"
    assert scrub("the abcd key", "abcd", min_len=4) == "the *** key"
