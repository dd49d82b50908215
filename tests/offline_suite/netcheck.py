"""Network probes of a small test suite that already knows how to run offline, written the way
real suites are: network tests are guarded by a probe, as urllib3's `requires_network` does.
The probe connects to a test address; if that fails with ENETUNREACH or EHOSTUNREACH ("this
machine has no network") the test is skipped, any other error fails it. A lookup probe skips
on EAI_AGAIN or EAI_NONAME likewise. tests/e2e/test_offline_suite.py runs this suite under
`egress-run --deny-as offline` and on a host without a network, and expects the same skips.

Nothing here may reach beyond this machine: the probes and the network tests run only in a
network namespace whose only link is lo (scripts/sandbox.sh's, or a fresh `unshare -n`), where
the test addresses either are local or answer ENETUNREACH at once. Elsewhere those tests skip.
"""
import errno
import functools
import socket

import pytest

# TEST-NET addresses and a .test name: local (or unreachable) inside the sandbox only.
PROBE_ADDR = "198.51.100.20"
PROBE_NAME = "other.test"


def _only_loopback():
    return [name for _, name in socket.if_nameindex()] == ["lo"]


def _is_unreachable_err(err):
    return getattr(err, "errno", None) in (errno.ENETUNREACH, errno.EHOSTUNREACH)


def _has_route():
    try:
        sock = socket.create_connection((PROBE_ADDR, 80), 0.5)
        sock.close()
        return True
    except socket.timeout:
        return True
    except ConnectionRefusedError:
        return True  # something answered: there is a network
    except OSError as e:
        if _is_unreachable_err(e):
            return False
        raise


def _resolves():
    try:
        socket.getaddrinfo(PROBE_NAME, 80)
        return True
    except socket.gaierror as e:
        if e.errno in (socket.EAI_AGAIN, socket.EAI_NONAME):
            return False
        raise


def _guarded_by(probe, reason):
    def decorator(test):
        @functools.wraps(test)
        def wrapper(*args, **kwargs):
            if not _only_loopback():
                pytest.skip("network tests run only where nothing can leave (a namespace with only lo)")
            if not probe():
                pytest.skip(reason)
            return test(*args, **kwargs)

        return wrapper

    return decorator


def requires_network():
    return _guarded_by(_has_route, "Can't run the test because the network is unreachable")


def requires_dns():
    return _guarded_by(_resolves, "Can't run the test because names do not resolve")
