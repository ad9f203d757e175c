"""The labelling page in a real browser (Debian's Chromium driven by Playwright): keyboard only."""
import threading

import pytest

from flows.label_page import LabelSession, make_server
from flows.labels import load_items, read_labels
from tests.browser import chromium_page
from tests.conftest import copy_embedded

KEYS = {"a": "accept", "r": "reject", "s": "skip"}


@pytest.mark.slow
def test_labelling_twenty_pairs_by_keyboard_lands_twenty_labels(embedded, tmp_path):
    from tests.flows.test_classifier import _mine

    root = copy_embedded(embedded, str(tmp_path / "root"))
    cfg, _, pairs = _mine(root, str(tmp_path / "models"))
    _, items = load_items("general_editing", root)
    assert len(items) == len(pairs) >= 25
    server = make_server(LabelSession(root, "general_editing", items, "browser-test", cfg.ingest.max_pixels))
    threading.Thread(target=server.serve_forever, daemon=True).start()
    pressed: dict[str, str] = {}
    try:
        with chromium_page() as (page, errors):
            page.goto(f"http://127.0.0.1:{server.server_address[1]}/")
            progress = page.locator("#progress")
            progress.get_by_text(f"0 of {len(items)} pairs labelled").wait_for()
            for k in range(20):
                pair_id = page.locator("#pair-id").inner_text()
                assert pair_id == items[k].pair_id and pair_id not in pressed
                # both images decoded in the page (not a broken icon)
                page.wait_for_function("['source', 'target'].every(i => document.getElementById(i).complete "
                                       "&& document.getElementById(i).naturalWidth > 0)")
                key = "ars"[k % 3]
                page.keyboard.press(key)
                pressed[pair_id] = KEYS[key]
                progress.get_by_text(f"{k + 1} of {len(items)} pairs labelled").wait_for()
            assert page.locator("#pair-id").inner_text() == items[20].pair_id
            assert errors == []
    finally:
        server.shutdown()
        server.server_close()
    labels = read_labels(root, "general_editing").to_pylist()
    assert len(labels) == 20
    assert {r["pair_id"]: r["verdict"] for r in labels} == pressed
    assert all(r["who"] == "browser-test" and r["task"] == "general_editing" and r["at"] for r in labels)
    by_id = {it.pair_id: it for it in items}
    assert all((r["source_id"], r["target_id"]) == (by_id[r["pair_id"]].source_id, by_id[r["pair_id"]].target_id)
               for r in labels)
