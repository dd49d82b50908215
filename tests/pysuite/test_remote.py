import urllib.request


def test_fetch_from_other_test(sandbox_only):
    """This test reaches beyond loopback: under `egress-run --allow loopback` it must fail."""
    opener = urllib.request.build_opener(urllib.request.ProxyHandler({}))
    with opener.open("http://other.test/", timeout=30) as r:
        assert r.status == 200
