"""The hostile-customer suite shares the API tests' real uvicorn server, owners and helpers."""

from tests.api.conftest import api, make_api  # noqa: F401  (fixtures)
from tests.api.test_webhooks import run_sender  # noqa: F401
