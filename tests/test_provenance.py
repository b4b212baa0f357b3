"""Provenance of measured rows."""


def test_git_sha_override(monkeypatch):
    """Rows measured on a copy of the tree without .git still carry the commit they came from."""
    from sdlaws import provenance

    provenance.git_sha.cache_clear()
    monkeypatch.setenv("SDLAWS_GIT_SHA", "abc123def456")
    try:
        assert provenance.provenance()["git_sha"] == "abc123def456"
    finally:
        provenance.git_sha.cache_clear()
