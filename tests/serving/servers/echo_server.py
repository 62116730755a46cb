"""A serving process of the kind a team brings instead of `cairn serve`, for the tests in
tests/serving/custom.rs: the Python standard library only.

    python3 echo_server.py --model DIR --port PORT [--health PATH]

- GET PATH (`/ready` by default) answers 200 once the server listens; any other GET, 404.
- POST /v1/predict reads the JSON body and answers 200 with the model version (the name
  of the model folder, which is the version on the local target), the number of rows,
  and the GREETING environment variable; or 500 when the model folder holds a file
  named FAIL (a "model" that loads but can't predict).

It refuses to start when the model folder is missing, as a real server would.
"""

import argparse
import json
import os
import sys
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer


def main():
    parser = argparse.ArgumentParser()
    parser.add_argument("--model", required=True)
    parser.add_argument("--port", required=True, type=int)
    parser.add_argument("--health", default="/ready")
    args = parser.parse_args()
    if not os.path.isdir(args.model):
        print(f"echo_server: no model folder at {args.model}", file=sys.stderr)
        sys.exit(2)
    version = os.path.basename(os.path.normpath(args.model))
    broken = os.path.exists(os.path.join(args.model, "FAIL"))

    class Handler(BaseHTTPRequestHandler):
        protocol_version = "HTTP/1.1"
        # Headers and body go out in two writes: without this, Nagle's algorithm holds
        # the body back for the client's delayed ACK (40 ms an answer on keep-alive).
        disable_nagle_algorithm = True

        def answer(self, status, body):
            data = json.dumps(body).encode()
            self.send_response(status)
            self.send_header("content-type", "application/json")
            self.send_header("content-length", str(len(data)))
            self.end_headers()
            self.wfile.write(data)

        def do_GET(self):
            if self.path == args.health:
                self.answer(200, {"status": "ok", "version": version})
            else:
                self.answer(404, {"error": f"no route {self.path}"})

        def do_POST(self):
            length = int(self.headers.get("content-length") or 0)
            body = self.rfile.read(length)
            if self.path != "/v1/predict":
                self.answer(404, {"error": f"no route {self.path}"})
                return
            if broken:
                self.answer(500, {"error": "this model can't predict", "version": version})
                return
            try:
                rows = json.loads(body or b"{}").get("rows", [])
            except ValueError:
                self.answer(400, {"error": "the body is not JSON"})
                return
            self.answer(
                200,
                {
                    "version": version,
                    "rows": len(rows),
                    "greeting": os.environ.get("GREETING"),
                    "server": "echo",
                },
            )

        def log_message(self, format, *args):
            pass

    server = ThreadingHTTPServer(("127.0.0.1", args.port), Handler)
    server.daemon_threads = True
    print(f"echo_server: serving {version} on 127.0.0.1:{args.port}", file=sys.stderr, flush=True)
    server.serve_forever()


if __name__ == "__main__":
    main()
