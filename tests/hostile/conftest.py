"""The API fixtures (a real uvicorn server per test, owners with keys) for the hostile-customer tests."""

from tests.api.conftest import api, make_api  # noqa: F401
from tests.api.test_webhooks import run_sender  # noqa: F401
