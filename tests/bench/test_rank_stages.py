import orjson

from bench.rank_stages import CANDIDATES, SearchPage, body, modes, ndcg_at_10, search_pages


def test_a_search_page_holds_its_judged_titles_among_other_validation_titles() -> None:
    pages, catalog = search_pages(5, seed=0)
    assert len(pages) == 5
    assert len(catalog) == 7_029
    for page in pages:
        assert len(page.candidates) == len(set(page.candidates)) == CANDIDATES
        assert set(page.candidates) <= set(catalog)
        assert 0 < sum(g > 0 for g in page.gains) < CANDIDATES  # judged relevant ones, and fillers at 0


def test_ndcg_of_an_answer_and_the_request_bodies() -> None:
    page = SearchPage("drill", ["a", "b", "c"], [0.0, 2.0, 1.0])
    assert ndcg_at_10(page, [1, 2, 0]) == 1.0
    assert ndcg_at_10(page, [0, 2, 1]) < 1.0
    sent = [orjson.loads(body(page, mode)) for _, mode in modes([10])]
    assert [s.get("rerank_top_n") for s in sent] == [0, 10, None]
    assert sent[-1]["model"] == "product-reranker"
    assert all(s["top_k"] == 10 and len(s["candidates"]) == 3 for s in sent)
