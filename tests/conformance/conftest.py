"""The conformance tests import CPython's own asyncio tests from
``test.test_asyncio``.  Some builds leave that package out (Debian ships
it as libpython3.X-testsuite): stop the run with the reason instead of
passing a suite that tested less.  tests/bootstrap.sh installs it."""
import sys

try:
    import test.test_asyncio  # noqa: F401
except ImportError as exc:
    raise ImportError(
        f"{sys.executable} has no test.test_asyncio (CPython's asyncio tests, "
        f"which tests/conformance runs): install the interpreter's test suite "
        f"(on Debian: apt-get install libpython{sys.version_info[0]}."
        f"{sys.version_info[1]}-testsuite; tests/bootstrap.sh does)") from exc
