"""The images service's own errors, on the kit's tree (``nexus_kit.errors``).

    NexusError
    ├── GenerationFailedError     500 server_error / generation_failed  (a backend crashed)
    ├── QueueFullError            429 requests / queue_full             (+ Retry-After)
    └── ImageFileNotFoundError    404 invalid_request_error / file_not_found
"""

from __future__ import annotations

from nexus_kit import NexusError, NotFoundError, RateLimitError


class GenerationFailedError(NexusError):
    default_code = "generation_failed"

    def __init__(self, request_id: str | None) -> None:
        # No exception text: it can carry paths, tensors or upstream internals. The log has it.
        super().__init__(
            "The image backend failed while generating"
            f" (request id {request_id or 'unknown'}); the error was logged."
        )


class QueueFullError(RateLimitError):
    default_code = "queue_full"

    def __init__(self, waiting: int) -> None:
        super().__init__(
            f"The image service is busy ({waiting} generations running or queued);"
            " retry shortly.",
            retry_after=5,
        )


class ImageFileNotFoundError(NotFoundError):
    default_code = "file_not_found"

    def __init__(self) -> None:
        super().__init__("No image file with this id: it never existed or has expired.")
