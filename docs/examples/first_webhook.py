"""From a key to a verified webhook, with stayler.client: the Python half of docs/api.md's session.

It listens for webhooks on a local port, registers that URL as an endpoint, uploads a person photo
and a garment from the repository, submits a conversion with an idempotency key, waits for it,
downloads the result, and prints the webhook once its signature checks out.

    python docs/examples/first_webhook.py --api http://127.0.0.1:8080 --key "$KEY"
"""

from __future__ import annotations

import argparse
import queue
import sys
import threading
import time
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer
from pathlib import Path

import httpx

from stayler.client import StaylerClient, WebhookVerificationError, verify_webhook

ROOT = Path(__file__).resolve().parents[2]
PERSON = ROOT / "tests" / "data" / "photos" / "astronaut.jpg"
GARMENT = ROOT / "docs" / "examples" / "tee.png"


def receive_webhooks(port: int) -> tuple[ThreadingHTTPServer, queue.Queue[tuple[dict[str, str], bytes]]]:
    """A tiny HTTP receiver on 127.0.0.1:port; each POST's headers and raw body go to the queue."""
    received: queue.Queue[tuple[dict[str, str], bytes]] = queue.Queue()

    class Handler(BaseHTTPRequestHandler):
        def do_POST(self) -> None:
            body = self.rfile.read(min(int(self.headers.get("content-length", "0")), 1 << 20))
            received.put((dict(self.headers.items()), body))
            self.send_response(204)  # answer 2xx at once; a slow receiver is a failed attempt
            self.end_headers()

        def log_message(self, *args: object) -> None:
            pass

    server = ThreadingHTTPServer(("127.0.0.1", port), Handler)
    threading.Thread(target=server.serve_forever, daemon=True).start()
    return server, received


def wait_for_api(base_url: str, timeout: float = 60.0) -> None:
    """Until the API answers /readyz (it migrates before it listens)."""
    deadline = time.monotonic() + timeout
    while True:
        try:
            if httpx.get(f"{base_url}/readyz", timeout=2).status_code == 200:
                return
        except httpx.TransportError:
            pass
        if time.monotonic() > deadline:
            raise SystemExit(f"the API at {base_url} did not become ready within {timeout:.0f} s")
        time.sleep(0.3)


def main() -> int:
    """Run the session; exit 0 once a verified conversion.completed webhook has arrived."""
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--api", default="http://127.0.0.1:8080", help="the API's base URL")
    parser.add_argument("--key", required=True, help="an operator-scope key (it adds the webhook endpoint)")
    parser.add_argument("--port", type=int, default=0, help="the receiver's port (default: a free one)")
    parser.add_argument("--result", type=Path, default=Path("result.jpg"), help="where to write the result")
    args = parser.parse_args()

    server, received = receive_webhooks(args.port)
    hook_url = f"http://127.0.0.1:{server.server_address[1]}/hooks/stayler"
    wait_for_api(args.api)
    with StaylerClient(args.api, args.key) as api:
        endpoint = api.add_webhook(hook_url, events=["conversion.completed", "conversion.failed"])
        print(f"webhook endpoint {endpoint['id']} → {hook_url}")
        person = api.upload_image(PERSON, "user")["id"]
        garment = api.upload_image(GARMENT, "cloth")["id"]
        conversion = api.submit(person, garment, idempotency_key="order-1001", style_name="casual")
        print(f"submitted {conversion['id']} ({conversion['status']})")
        done = api.wait(conversion["id"], timeout=120)
        print(f"{done['id']} {done['status']} after {done['attempts']} attempt(s)")
        if done["status"] != "completed":
            return 1
        args.result.write_bytes(api.download(done["id"]))
        print(f"result written to {args.result}")
    headers, body = received.get(timeout=60)
    try:
        event = verify_webhook(endpoint["secret"], headers, body)
    except WebhookVerificationError as exc:
        print(f"webhook refused: {exc}", file=sys.stderr)
        return 1
    print(f"webhook verified: {event['type']} for {event['data']['id']}")
    server.shutdown()
    return 0 if event["data"]["id"] == done["id"] else 1


if __name__ == "__main__":
    sys.exit(main())
