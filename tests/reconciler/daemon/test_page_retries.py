"""The status page lists each failed item with its last error and when it is tried again."""

from __future__ import annotations

from datetime import datetime
from html import escape
from pathlib import Path
from typing import Any

from reconciler.daemon import page
from reconciler.daemon.status import status_json
from tests.reconciler.daemon.test_retries import make, node  # noqa: F401  (node: the fixture)


async def test_page_shows_a_failed_item_its_error_and_next_try(tmp_path: Path, node: Any) -> None:  # noqa: F811
    daemon, _, _ = make(tmp_path, node, '[models."nosuch:7b"]\n[models."qwq:32b"]\n')
    await daemon.run_pass("start")
    [item] = status_json(daemon, None)["retries"]
    html = page.main(status_json(daemon, None))
    assert "<h2>Failed items, retried later</h2>" in html
    table = html[html.index('<table id="retries">'):]
    table = table[:table.index("</table>")]
    assert escape('ollama/gpu-1:models."nosuch:7b"') in table and "permanent" in table
    assert "file does not exist" in table
    assert datetime.fromtimestamp(item["next_retry"]).strftime("%Y-%m-%d %H:%M:%S") in table
    assert "qwq:32b" not in table      # pulled: nothing to retry

    daemon.path.write_text(daemon.path.read_text().replace('[models."nosuch:7b"]\n', ""))
    await daemon.run_pass("file change")
    assert "Failed items" not in page.main(status_json(daemon, None))
