"""Cached compressed contexts saved to and restored from --prompt-cache-dir (llama-server's slot
save/restore): through the HTTP endpoints, across server processes, with names that cannot leave
the folder and files that are not contexts refused with a 4xx."""

import openai

from conftest import STORIES, Server

STORY = ("Lily lived in a small house by the sea with her dog Max. Every morning they walked to the market, "
         "where the baker gave Max a bone. One day the baker was sick, so Lily baked bread for the whole town.")
DOC = [{"role": "system", "content": "Answer from the story."}, {"role": "user", "content": STORY},
       {"role": "assistant", "content": "I read it."}]
PRESS = {"kv_press": "snapkv", "kv_ratio": 0.5}


def ask(server, question):
    c = openai.OpenAI(base_url=server.url + "/v1", api_key="none", max_retries=0, timeout=60)
    return c.chat.completions.create(model="m", messages=DOC + [{"role": "user", "content": question}], max_tokens=12,
                                     temperature=0, extra_body=PRESS)


def test_a_saved_context_serves_another_server(tmp_path):
    a = Server(STORIES, "--prompt-cache-dir", str(tmp_path))
    try:
        first = ask(a, "Who baked?")
        status, listing = a.get("/contexts")
        assert status == 200 and len(listing["data"]) == 1
        ctx = listing["data"][0]
        assert ctx["kv_press"] == "snapkv" and ctx["kv_ratio"] == 0.5 and ctx["tokens"] > 0
        assert 0 < ctx["bytes_held"] < ctx["bytes_full"]  # compressed: fewer bytes than its f16 tokens
        status, saved = a.post(f"/contexts/{ctx['id']}?action=save", {"filename": "story.kvc"})
        assert status == 200, saved
        assert saved["n_saved"] == ctx["tokens"] and saved["n_written"] == (tmp_path / "story.kvc").stat().st_size
        assert [p.name for p in tmp_path.iterdir()] == ["story.kvc"]  # no partial file left
    finally:
        a.stop()

    b = Server(STORIES, "--prompt-cache-dir", str(tmp_path))
    try:
        status, restored = b.post("/contexts?action=restore", {"filename": "story.kvc"})
        assert status == 200, restored
        assert restored["id"] == ctx["id"] and restored["n_restored"] == ctx["tokens"]
        assert b.get("/contexts")[1]["data"][0]["bytes_held"] == ctx["bytes_held"]
        again = ask(b, "Who baked?")
        assert again.usage.prompt_tokens_details.cached_tokens == ctx["tokens"]
        assert again.choices[0].message.content == first.choices[0].message.content
        # Erased: the next request prefills its context again.
        assert b.request("DELETE", f"/contexts/{ctx['id']}") == (200, {"id": ctx["id"], "n_erased": ctx["tokens"]})
        assert b.get("/contexts")[1]["data"] == []
        assert ask(b, "Who baked?").usage.prompt_tokens_details.cached_tokens == 0
    finally:
        b.stop()


def test_bad_names_files_and_ids_are_4xx_and_the_server_keeps_serving(tmp_path):
    (tmp_path / "garbage.kvc").write_bytes(b"not a cache file at all")
    outside = tmp_path.parent / "outside.kvc"
    s = Server(STORIES, "--prompt-cache-dir", str(tmp_path))
    try:
        ask(s, "Who baked?")
        cid = s.get("/contexts")[1]["data"][0]["id"]
        for name in ["../outside.kvc", "/etc/passwd", "a/b.kvc", ".hidden", "", "x" * 129, "a..b", "é.kvc"]:
            status, body = s.post(f"/contexts/{cid}?action=save", {"filename": name})
            assert status == 400 and body["error"]["param"] == "filename", (name, body)
            status, body = s.post("/contexts?action=restore", {"filename": name})
            assert status == 400 and body["error"]["param"] == "filename", (name, body)
        assert not outside.exists()
        assert s.post("/contexts/0123456789abcdef?action=save", {"filename": "x.kvc"})[0] == 404
        assert s.request("DELETE", "/contexts/0123456789abcdef")[0] == 404
        assert s.post("/contexts?action=restore", {"filename": "missing.kvc"})[0] == 404
        status, body = s.post("/contexts?action=restore", {"filename": "garbage.kvc"})
        assert status == 400 and "garbage.kvc" in body["error"]["message"]
        assert s.post(f"/contexts/{cid}?action=fly", {"filename": "x.kvc"})[0] == 400
        assert s.post(f"/contexts/{cid}?action=save", {"filename": "x.kvc", "mode": 1})[0] == 400
        assert s.post(f"/contexts/{cid}?action=save", b"{not json")[0] == 400
        assert s.post(f"/contexts/{cid}?action=save", {"filename": 3})[0] == 400
        assert s.get("/health")[0] == 200 and ask(s, "Where?").choices[0].message.content
    finally:
        s.stop()


def test_without_a_folder_save_and_restore_are_not_supported(server):
    ask(server, "Who baked?")
    cid = server.get("/contexts")[1]["data"][0]["id"]
    status, body = server.post(f"/contexts/{cid}?action=save", {"filename": "x.kvc"})
    assert status == 501 and body["error"]["type"] == "not_supported_error"
    assert server.post("/contexts?action=restore", {"filename": "x.kvc"})[0] == 501
