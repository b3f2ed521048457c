"""CPython's transport, server, stream, TLS and sendfile tests bound to
uringloop (imported from the installed ``test.test_asyncio`` at run time).

Classes with a loop hook get ``uringloop.Loop``; classes that call
``asyncio.new_event_loop()`` themselves run under uringloop's policy.
Known gaps are expected failures with their reason (see ``_known.py``).
"""
import unittest

from test.test_asyncio import (test_buffered_proto, test_sendfile, test_server,
                               test_ssl, test_sslproto, test_streams, test_unix_events)
from test.test_asyncio import utils as test_utils

import uringloop

from ._known import apply_known_failures
from ._policy import UringPolicyMixin, UringSelectorLoopMixin


class UringStreamTests(UringPolicyMixin, test_streams.StreamTests):
    pass


class UringStartServerTests(test_server.BaseStartServer, unittest.TestCase):
    def new_loop(self):
        return uringloop.Loop()


class UringSendfileTests(test_sendfile.SendfileTestsBase, test_utils.TestCase):
    def create_event_loop(self):
        return uringloop.Loop()


class UringBufferedProtocolTests(test_buffered_proto.BaseTestBufferedProtocol,
                                 unittest.TestCase):
    def new_loop(self):
        return uringloop.Loop()


class UringStartTLSTests(test_sslproto.BaseStartTLS, unittest.TestCase):
    def new_loop(self):
        return uringloop.Loop()


class UringSslProtoHandshakeTests(UringPolicyMixin, test_sslproto.SslProtoHandshakeTests):
    pass


class UringSSLTests(UringPolicyMixin, test_ssl.TestSSL):
    def new_loop(self):
        return uringloop.Loop()


class UringUnixSocketTests(UringSelectorLoopMixin,
                           test_unix_events.SelectorEventLoopUnixSocketTests):
    pass


class UringUnixSockSendfileTests(UringPolicyMixin,
                                 test_unix_events.SelectorEventLoopUnixSockSendfileTests):
    pass



apply_known_failures(UringUnixSockSendfileTests, {
    "test_sock_sendfile_not_available":
        "patches asyncio.unix_events.os to hide os.sendfile and expects that "
        "error; uringloop's native path splices through the ring and never "
        "calls os.sendfile",
})
