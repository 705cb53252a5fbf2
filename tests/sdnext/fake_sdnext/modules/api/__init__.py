"""SD.Next's HTTP API, reduced to the functions the extension's features go through."""


class HTTPException(Exception):  # fastapi.exceptions.HTTPException
    def __init__(self, status_code: int, detail: str):
        super().__init__(f"{status_code}: {detail}")
        self.status_code = status_code
        self.detail = detail
