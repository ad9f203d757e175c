import io

from rich.console import Console

import flows.progress as fp


def test_callbacks_set_the_total_and_advance_the_bar(monkeypatch):
    monkeypatch.setattr(fp, "console", Console(file=io.StringIO(), record=True, width=100, force_terminal=False))
    with fp.progress_bar("ingest", total=None) as (set_total, advance):
        set_total(5)
        advance(2)
        advance(3)
    text = fp.console.export_text()
    assert "ingest" in text and "5/5" in text
