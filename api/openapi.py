"""The API's OpenAPI document as the repository keeps it (``docs/openapi.json``).

``python -m api.openapi`` prints it; ``python -m api.openapi --write`` rewrites the file.
``tests/api/test_openapi_drift.py`` fails when the file and the code disagree.
"""

from __future__ import annotations

import argparse
import json
import sys
import tempfile
from collections.abc import Sequence
from pathlib import Path
from typing import Any

from core.settings import Settings

DOCUMENT = Path(__file__).resolve().parents[1] / "docs" / "openapi.json"


def openapi_document() -> dict[str, Any]:
    """The document the running API serves at ``/openapi.json`` (built without any server)."""
    from api.app import create_app

    with tempfile.TemporaryDirectory(prefix="stayler-openapi-") as folder:
        settings = Settings(database_url="postgresql://unused/unused", redis_url=None, state_dir=Path(folder))
        app = create_app(settings, settings.database_url or "")
        return app.openapi()


def render(document: dict[str, Any]) -> str:
    """The file's text: stable key order and indentation, so a diff shows what changed."""
    return json.dumps(document, indent=2, sort_keys=True, ensure_ascii=False) + "\n"


def main(argv: Sequence[str] | None = None) -> int:
    """Print the document, or write it to docs/openapi.json with ``--write``."""
    parser = argparse.ArgumentParser(prog="python -m api.openapi", description=__doc__.split("\n\n")[0])
    parser.add_argument("--write", action="store_true", help=f"rewrite {DOCUMENT.name} in docs/")
    args = parser.parse_args(argv)
    text = render(openapi_document())
    if args.write:
        DOCUMENT.write_text(text, encoding="utf-8")
        print(f"wrote {DOCUMENT}", file=sys.stderr)
    else:
        sys.stdout.write(text)
    return 0


if __name__ == "__main__":
    sys.exit(main())
