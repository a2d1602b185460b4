#!/usr/bin/env python3
"""A stand-in for the ``ollama`` program in the compose test's image (Python stdlib only).

``ollama serve`` answers the slice of Ollama's HTTP API the gateway uses, in Ollama's own wire
format: ``GET /api/version``, ``GET /api/tags`` and the OpenAI-compatible
``POST /v1/chat/completions`` (plain JSON, or ``stream: true`` as SSE chunks ending with
``data: [DONE]``). ``ollama list`` asks the server, as the real CLI does, so compose's
healthcheck (``ollama list``) passes only while the server answers. The reply to a chat is
deterministic (``echo: <last user message>``) so the test can check what came back.
"""

from __future__ import annotations

import json
import os
import sys
import time
import urllib.request
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer
from typing import Any

MODEL = "llama3.2:latest"
TAGS = {
    "models": [
        {
            "name": MODEL,
            "model": MODEL,
            "modified_at": "2025-01-01T00:00:00Z",
            "size": 2019393189,
            "digest": "a80c4f17acd55265feec403c7aef86be0c25983ab279d83f3bcd3abbcb5b8b72",
            "details": {
                "parent_model": "",
                "format": "gguf",
                "family": "llama",
                "families": ["llama"],
                "parameter_size": "3.2B",
                "quantization_level": "Q4_K_M",
            },
        }
    ]
}
VERSION = {"version": "0.13.5"}


def reply_to(body: dict[str, Any]) -> str:
    users = [m for m in body.get("messages", []) if m.get("role") == "user"]
    content = users[-1].get("content", "") if users else ""
    return f"echo: {content}" if isinstance(content, str) else "echo"


class Handler(BaseHTTPRequestHandler):
    protocol_version = "HTTP/1.1"
    server_version = "fake-ollama"

    def log_message(self, format: str, *args: Any) -> None:
        sys.stderr.write(f"fake-ollama {self.command} {self.path}\n")

    def _json(self, status: int, document: Any) -> None:
        data = json.dumps(document).encode()
        self.send_response(status)
        self.send_header("Content-Type", "application/json; charset=utf-8")
        self.send_header("Content-Length", str(len(data)))
        self.end_headers()
        self.wfile.write(data)

    def do_GET(self) -> None:
        if self.path == "/api/version":
            self._json(200, VERSION)
        elif self.path == "/api/tags":
            self._json(200, TAGS)
        elif self.path == "/":
            self._json(200, "Ollama is running")
        else:
            self._json(404, {"error": "404 page not found"})

    def do_POST(self) -> None:
        length = int(self.headers.get("Content-Length") or 0)
        try:
            body = json.loads(self.rfile.read(length) or b"{}")
        except ValueError:
            self._json(400, {"error": {"message": "invalid JSON", "type": "invalid_request_error"}})
            return
        if self.path != "/v1/chat/completions":
            self._json(404, {"error": "404 page not found"})
        elif body.get("model") not in (MODEL, MODEL.split(":")[0]):
            message = f'model "{body.get("model")}" not found, try pulling it first'
            self._json(404, {"error": {"message": message, "type": "api_error"}})
        elif body.get("stream"):
            self._stream(body)
        else:
            self._json(200, self._completion(body))

    def _completion(self, body: dict[str, Any]) -> dict[str, Any]:
        text = reply_to(body)
        return {
            "id": "chatcmpl-1",
            "object": "chat.completion",
            "created": int(time.time()),
            "model": body["model"],
            "system_fingerprint": "fp_ollama",
            "choices": [
                {
                    "index": 0,
                    "message": {"role": "assistant", "content": text},
                    "finish_reason": "stop",
                }
            ],
            "usage": {"prompt_tokens": 10, "completion_tokens": 3, "total_tokens": 13},
        }

    def _stream(self, body: dict[str, Any]) -> None:
        self.send_response(200)
        self.send_header("Content-Type", "text/event-stream")
        self.send_header("Transfer-Encoding", "chunked")
        self.end_headers()
        words = reply_to(body).split(" ")
        for index, word in enumerate(words):
            piece = word if index == 0 else " " + word
            self._event(self._chunk(body, {"role": "assistant", "content": piece}, None))
        self._event(self._chunk(body, {"role": "assistant", "content": ""}, "stop"))
        self._send_chunk(b"data: [DONE]\n\n")
        self._send_chunk(b"")

    def _chunk(self, body: dict[str, Any], delta: dict[str, str], finish: str | None) -> Any:
        return {
            "id": "chatcmpl-1",
            "object": "chat.completion.chunk",
            "created": int(time.time()),
            "model": body["model"],
            "system_fingerprint": "fp_ollama",
            "choices": [{"index": 0, "delta": delta, "finish_reason": finish}],
        }

    def _event(self, document: Any) -> None:
        self._send_chunk(b"data: " + json.dumps(document).encode() + b"\n\n")

    def _send_chunk(self, data: bytes) -> None:
        self.wfile.write(f"{len(data):x}\r\n".encode() + data + b"\r\n")
        self.wfile.flush()


def main(argv: list[str]) -> int:
    host, _, port = os.environ.get("OLLAMA_HOST", "0.0.0.0:11434").rpartition(":")
    command = argv[1] if len(argv) > 1 else "serve"
    if command == "serve":
        ThreadingHTTPServer((host or "0.0.0.0", int(port)), Handler).serve_forever()
        return 0
    if command == "list":
        try:
            url = f"http://127.0.0.1:{port}/api/tags"
            with urllib.request.urlopen(url, timeout=3) as response:
                models = json.load(response)["models"]
        except OSError as exc:
            print(f"Error: {exc}", file=sys.stderr)
            return 1
        print("NAME")
        for model in models:
            print(model["name"])
        return 0
    print(f"fake ollama: unknown command {command!r}", file=sys.stderr)
    return 2


if __name__ == "__main__":
    sys.exit(main(sys.argv))
