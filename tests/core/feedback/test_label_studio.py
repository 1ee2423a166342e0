"""The Label Studio client's failures, without a Label Studio: one line naming the server and
the request, never the token."""

import http.server
import threading

import pytest

from rlhf.core.feedback.label_studio import Client, LabelStudioError
from rlhf.flows.servers import free_port

TOKEN = "secret-token-0123456789"


@pytest.mark.faults
def test_an_unreachable_server_is_one_line():
    url = f"http://127.0.0.1:{free_port()}"
    with pytest.raises(LabelStudioError) as error:
        Client(url, TOKEN, timeout=5).project("rlhf pairs")
    assert str(error.value).startswith(f"Label Studio at {url}: unreachable")
    assert TOKEN not in str(error.value)


class Html(http.server.BaseHTTPRequestHandler):
    def do_GET(self):  # noqa: N802 (http.server's name)
        self.send_response(200)
        self.end_headers()
        self.wfile.write(b"<html>some other service</html>")

    def log_message(self, *args):
        pass


def test_another_kind_of_server_is_one_line():
    server = http.server.HTTPServer(("127.0.0.1", 0), Html)
    threading.Thread(target=server.serve_forever, daemon=True).start()
    url = f"http://127.0.0.1:{server.server_port}"
    try:
        with pytest.raises(LabelStudioError) as error:
            Client(url, TOKEN, timeout=5).project("rlhf pairs")
    finally:
        server.shutdown()
    assert str(error.value) == f"Label Studio at {url}: GET /api/projects: not a JSON answer"
