

def test_safe_url_masks_only_the_password() -> None:
    from keel.core import safe_url

    assert safe_url("redis://ann:s3cret@cache.local:6380/1") == "redis://ann:***@cache.local:6380/1"
    assert safe_url("redis://:s3cret@cache.local/0") == "redis://:***@cache.local/0"
    assert safe_url("redis://cache.local:6379/0") == "redis://cache.local:6379/0"
